"""A GGUF file's header (metadata and tensor table), read fast.

The `gguf` package reads every array element through numpy views, which
takes ~20 s for a 262144-token vocabulary; this reads the same header in
well under a second. Tensor data is not read. Layout: GGUF v2/v3, as in the
GGUF spec (docs/gguf.md). Raises HeaderError with the byte offset for a
truncated or malformed header; never reads past the end of the file.
"""

import struct

import numpy as np

# GGUF metadata value types.
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR = {_U8: "<B", _I8: "<b", _U16: "<H", _I16: "<h", _U32: "<I", _I32: "<i",
           _F32: "<f", _BOOL: "<?", _U64: "<Q", _I64: "<q", _F64: "<d"}
_NUMPY = {_U8: "<u1", _I8: "<i1", _U16: "<u2", _I16: "<i2", _U32: "<u4",
          _I32: "<i4", _F32: "<f4", _BOOL: "<u1", _U64: "<u8", _I64: "<i8",
          _F64: "<f8"}

# ggml type id -> GGUF type name (the gguf package's spelling).
TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
    9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
    15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
    20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
    26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0",
    35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0", 42: "Q2_0",
}


class HeaderError(Exception):
    pass


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise HeaderError(f"truncated at byte {self.pos} (needs {n} more "
                              f"bytes, file has {len(self.buf)})")
        p = self.pos
        self.pos += n
        return p

    def scalar(self, fmt):
        n = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buf, self.take(n))[0]

    def string(self):
        n = self.scalar("<Q")
        p = self.take(n)
        try:
            return bytes(self.buf[p:p + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError(f"string at byte {p} is not UTF-8") from None

    def value(self, vtype, depth=0):
        if vtype in _SCALAR:
            v = self.scalar(_SCALAR[vtype])
            return bool(v) if vtype == _BOOL else v
        if vtype == _STR:
            return self.string()
        if vtype == _ARR and depth == 0:
            etype, n = self.scalar("<I"), self.scalar("<Q")
            if etype in _NUMPY:
                size = np.dtype(_NUMPY[etype]).itemsize
                p = self.take(n * size)
                arr = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=n, offset=p)
                return [bool(x) for x in arr] if etype == _BOOL else arr.tolist()
            if etype == _STR:
                if n > len(self.buf):
                    raise HeaderError(f"array of {n} strings at byte {self.pos} "
                                      "is longer than the file")
                return [self.string() for _ in range(n)]
            raise HeaderError(f"unsupported array element type {etype} at "
                              f"byte {self.pos}")
        raise HeaderError(f"unknown metadata value type {vtype} at byte {self.pos}")


def read_header(path):
    """(metadata dict, [(name, type name, ne tuple, offset)], data start)."""
    with open(path, "rb") as f:
        buf = f.read(16)
        if len(buf) < 4 or buf[:4] != b"GGUF":
            raise HeaderError(f"not a GGUF file (magic {bytes(buf[:4])!r})")
        f.seek(0)
        import mmap
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise HeaderError("empty file") from None
    # The map is released with the last view into it (no explicit close:
    # an exception's traceback may still hold one).
    c = _Cursor(memoryview(mm))
    c.take(4)
    version = c.scalar("<I")
    if version not in (2, 3):
        raise HeaderError(f"GGUF version {version} (qcc reads 2 and 3)")
    n_tensors, n_kv = c.scalar("<Q"), c.scalar("<Q")
    if n_kv > len(mm) or n_tensors > len(mm):
        raise HeaderError(f"{n_kv} keys / {n_tensors} tensors cannot fit "
                          f"in {len(mm)} bytes")
    meta = {}
    for _ in range(n_kv):
        key = c.string()
        meta[key] = c.value(c.scalar("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = c.string()
        nd = c.scalar("<I")
        if nd > 8:
            raise HeaderError(f"tensor '{name}' has {nd} dimensions")
        ne = tuple(c.scalar("<Q") for _ in range(nd))
        t = c.scalar("<I")
        off = c.scalar("<Q")
        tensors.append((name, TYPE_NAMES.get(t, f"type{t}"), ne, off))
    align = int(meta.get("general.alignment", 32) or 32)
    start = (c.pos + align - 1) // align * align
    return meta, tensors, start


def read_f32_tensor(path, name):
    """The values of the small F32 tensor `name` (a flat numpy array; e.g.
    `rope_freqs.weight`). HeaderError if it is missing, not F32, or its data
    lies past the end of the file."""
    meta, tensors, start = read_header(path)
    for tname, type_name, ne, off in tensors:
        if tname != name:
            continue
        if type_name != "F32":
            raise HeaderError(f"tensor '{name}' is {type_name}, expected F32")
        n = int(np.prod(ne, dtype=np.int64)) if ne else 1
        with open(path, "rb") as f:
            f.seek(start + off)
            buf = f.read(4 * n)
        if len(buf) != 4 * n:
            raise HeaderError(f"tensor '{name}': data at offset {start + off} "
                              "runs past the end of the file")
        return np.frombuffer(buf, "<f4").copy()
    raise HeaderError(f"no tensor '{name}'")


def read_tensor_bytes(path, name):
    """(type name, the raw bytes of tensor `name` as a read-only uint8 array
    over the mapped file: no copy). HeaderError if it is missing, of a
    type whose block size is unknown, or runs past the end of the file."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    meta, tensors, start = read_header(path)
    for tname, type_name, ne, off in tensors:
        if tname != name:
            continue
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
        except KeyError:
            raise HeaderError(f"tensor '{name}' has the unknown type "
                              f"{type_name}") from None
        n = int(np.prod(ne, dtype=np.int64)) if ne else 1
        nbytes = n // block * size
        data = np.memmap(path, np.uint8, mode="r")
        if start + off + nbytes > len(data):
            raise HeaderError(f"tensor '{name}': data at offset {start + off} "
                              "runs past the end of the file")
        return type_name, data[start + off:start + off + nbytes]
    raise HeaderError(f"no tensor '{name}'")
