#!/usr/bin/env python3
"""Generates the GGUF reader's malformed-file corpus.

Each case is a small hand-built GGUF byte string that breaks exactly one
reader rule (or, for the `ok-*` cases, none). The files are built with
struct, not with any GGUF library, so that the corpus is independent of the
code it tests. Writes <out>/<case>.gguf and <out>/expected.tsv with columns

    file    expected    context

where `expected` is `OK` for valid files or the rule id the error must name
(`rule <id>:`), and `context` is a substring the error must also contain
("" when none). Usage: gen_corpus.py OUT_DIR
"""

import os
import struct
import sys

# GGUF value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# ggml tensor types used below.
T_F32, T_F16, T_Q4_0, T_Q8_0, T_I8, T_I16, T_I32, T_I64, T_F64 = (
    0, 1, 2, 8, 24, 25, 26, 27, 28)


def u32(x):
    return struct.pack("<I", x & 0xFFFFFFFF)


def u64(x):
    return struct.pack("<Q", x & 0xFFFFFFFFFFFFFFFF)


def i64(x):
    return struct.pack("<q", x)


def gstr(b):
    if isinstance(b, str):
        b = b.encode()
    return u64(len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + u32(vtype) + payload


def kv_u32(key, x):
    return kv(key, U32, u32(x))


def kv_str(key, s):
    return kv(key, STRING, gstr(s))


def tinfo(name, dims, ttype, offset):
    return gstr(name) + u32(len(dims)) + b"".join(i64(d) for d in dims) + \
        u32(ttype) + u64(offset)


def header(n_tensors, n_kv, version=3, magic=b"GGUF"):
    return magic + u32(version) + u64(n_tensors) + u64(n_kv)


def pad(b, align=32):
    return b + b"\0" * ((-len(b)) % align)


def gguf(kvs=(), tensors=(), data=b"", align=32, version=3, n_tensors=None,
         n_kv=None, pad_data=True):
    """A whole file: header, KVs, tensor infos, padding, data."""
    head = header(len(tensors) if n_tensors is None else n_tensors,
                  len(kvs) if n_kv is None else n_kv, version)
    body = head + b"".join(kvs) + b"".join(tensors)
    if tensors:
        body = pad(body, align)
    out = body + data
    if pad_data and tensors:
        out = pad(out, align)
    return out


ARCH = kv_str("general.architecture", "test")
F32x8 = struct.pack("<8f", *range(8))  # 32 bytes: one f32 tensor of 8


def one_f32(name="t", dims=(8,), offset=0, **kw):
    return gguf([ARCH], [tinfo(name, list(dims), T_F32, offset)], F32x8, **kw)


CASES = []


def case(name, expected, data, context=""):
    CASES.append((name, expected, context, data))


# --- Valid files (verify must accept them) --------------------------------
case("ok-minimal-v3", "OK", gguf([ARCH]))
case("ok-minimal-v2", "OK", gguf([ARCH], version=2))
case("ok-no-kv-no-tensors", "OK", header(0, 0))
case("ok-one-f32", "OK", one_f32())
case("ok-all-value-types", "OK", gguf([
    kv("a.u8", U8, b"\x07"), kv("a.i8", I8, b"\xff"),
    kv("a.u16", U16, struct.pack("<H", 65535)),
    kv("a.i16", I16, struct.pack("<h", -2)), kv_u32("a.u32", 7),
    kv("a.i32", I32, struct.pack("<i", -7)),
    kv("a.f32", F32, struct.pack("<f", 1.5)), kv("a.bool", BOOL, b"\x01"),
    kv_str("a.str", "hello"), kv("a.u64", U64, u64(1 << 40)),
    kv("a.i64", I64, i64(-(1 << 40))), kv("a.f64", F64, struct.pack("<d", 2.25)),
    kv("a.arr_str", ARRAY, u32(STRING) + u64(3) + gstr("x") + gstr("") + gstr("yz")),
    kv("a.arr_i32", ARRAY, u32(I32) + u64(2) + struct.pack("<2i", 1, -1)),
    kv("a.arr_empty", ARRAY, u32(F32) + u64(0)),
]))
case("ok-storage-types", "OK", gguf([ARCH], [
    tinfo("i8", [32], T_I8, 0), tinfo("i16", [16], T_I16, 32),
    tinfo("i32", [8], T_I32, 64), tinfo("i64", [4], T_I64, 96),
    tinfo("f64", [4], T_F64, 128)], bytes(range(160))))
case("ok-align-64", "OK", gguf([kv_u32("general.alignment", 64)], [
    tinfo("a", [8], T_F32, 0), tinfo("b", [8], T_F32, 64)],
    pad(F32x8, 64) + F32x8, align=64))
case("ok-zero-size-tensor", "OK", gguf([ARCH], [
    tinfo("empty", [0, 4], T_F32, 0), tinfo("t", [8], T_F32, 0)], F32x8))
case("ok-q4_0-4d", "OK", gguf([ARCH], [
    tinfo("q", [32, 1, 1, 2], T_Q4_0, 0)], b"\x11" * 36))
case("ok-gap-between-tensors", "OK", gguf([ARCH], [
    tinfo("a", [8], T_F32, 0), tinfo("b", [8], T_F32, 64)],
    F32x8 + b"\0" * 32 + F32x8))

# --- Header -----------------------------------------------------------------
case("empty", "truncated", b"")
case("magic-short", "truncated", b"GGU")
case("magic-bad", "magic", b"GGML" + u32(3) + u64(0) + u64(0))
case("magic-lowercase", "magic", b"gguf" + u32(3) + u64(0) + u64(0))
case("magic-only", "truncated", b"GGUF")
case("version-0", "version", header(0, 0, version=0))
case("version-1", "version", header(0, 0, version=1))
case("version-4", "version", header(0, 0, version=4))
case("version-huge", "version", header(0, 0, version=0xFFFFFFFF))
case("version-byteswapped-3", "version", header(0, 0, version=0x03000000),
     "byte-swapped")
case("version-byteswapped-2", "version", header(0, 0, version=0x02000000),
     "byte-swapped")
case("header-no-counts", "truncated", b"GGUF" + u32(3))
case("header-half-count", "truncated", b"GGUF" + u32(3) + u64(0) + b"\0\0")
case("kv-count-huge", "kv-count", header(0, 1 << 63))
case("kv-count-too-many", "kv-count", header(0, 10) + ARCH)
case("tensor-count-huge", "tensor-count", header(1 << 62, 0))
case("tensor-count-too-many", "tensor-count",
     header(3, 1) + ARCH + tinfo("t", [8], T_F32, 0))

# --- Metadata ---------------------------------------------------------------
case("key-length-huge", "string-length",
     header(0, 1) + u64(1 << 62) + b"k" * 16)
case("key-length-past-end", "string-length",
     header(0, 1) + u64(18) + b"general.arch" + u32(U8) + b"\0")
case("key-empty", "empty-key", header(0, 1) + kv("", U8, b"\x01"))
case("key-duplicate", "duplicate-key",
     gguf([kv_u32("x.y", 1), kv_u32("x.y", 2)]), "key 'x.y'")
case("value-type-13", "value-type", gguf([kv("k", 13, u32(0))]), "key 'k'")
case("value-type-huge", "value-type", gguf([kv("k", 0xFFFFFFFF, u32(0))]))
case("array-elem-type-13", "value-type",
     gguf([kv("k", ARRAY, u32(13) + u64(1) + u32(0))]), "key 'k'")
case("array-nested", "nested-array",
     gguf([kv("k", ARRAY, u32(ARRAY) + u64(1) + u32(U8) + u64(1) + b"\0")]),
     "key 'k'")
case("array-length-huge", "array-length",
     gguf([kv("k", ARRAY, u32(U32) + u64(1 << 62) + u32(1))]), "key 'k'")
case("array-length-past-end", "array-length",
     gguf([kv("k", ARRAY, u32(U64) + u64(3) + u64(1) + u64(2))]))
case("array-strings-huge", "array-length",
     gguf([kv("k", ARRAY, u32(STRING) + u64(1 << 60) + gstr("a"))]))
case("string-value-huge", "string-length",
     gguf([kv("k", STRING, u64(1 << 63) + b"abc")]), "key 'k'")
case("string-in-array-huge", "string-length",
     gguf([kv("k", ARRAY, u32(STRING) + u64(2) + gstr("ok") + u64(1 << 40))]))
case("value-truncated-u64", "truncated",
     header(0, 1) + gstr("k") + u32(U64) + b"\1\2\3")
case("value-truncated-u32", "truncated",
     header(0, 1) + gstr("abc") + u32(U32) + b"\1")
case("array-truncated", "truncated",
     header(0, 1) + gstr("k") + u32(ARRAY) + u32(U8))
case("bool-value-2", "bool-value", gguf([kv("k", BOOL, b"\x02")]))
case("alignment-u64", "alignment-type",
     gguf([kv("general.alignment", U64, u64(32))]), "general.alignment")
case("alignment-string", "alignment-type",
     gguf([kv_str("general.alignment", "32")]))
case("alignment-zero", "alignment-value", gguf([kv_u32("general.alignment", 0)]))
case("alignment-48", "alignment-value", gguf([kv_u32("general.alignment", 48)]))
case("alignment-not-pow2-big", "alignment-value",
     gguf([kv_u32("general.alignment", 0xFFFFFFFF)]))

# --- Tensor infos -------------------------------------------------------------
case("tensor-name-64", "tensor-name-length", one_f32(name="n" * 64))
case("tensor-name-huge", "string-length",
     header(1, 1) + ARCH + u64(1 << 62) + b"x" * 40)
case("tensor-duplicate", "duplicate-tensor", gguf([ARCH], [
    tinfo("w", [8], T_F32, 0), tinfo("w", [8], T_F32, 32)], F32x8 * 2),
    "tensor 'w'")
case("ndims-0", "n-dims", gguf([ARCH], [
    gstr("t") + u32(0) + u32(T_F32) + u64(0) + b"\0" * 32]), "tensor 't'")
case("ndims-5", "n-dims", one_f32(dims=(8, 1, 1, 1, 1)), "tensor 't'")
case("ndims-huge", "n-dims", gguf([ARCH], [
    gstr("t") + u32(0x80000000) + i64(8) + u32(T_F32) + u64(0)], F32x8))
case("dim-negative", "negative-dim", one_f32(dims=(8, -1)), "tensor 't'")
case("dim-int64-min", "negative-dim", one_f32(dims=(-(1 << 63),)))
case("dims-overflow", "size-overflow", one_f32(dims=(1 << 40, 1 << 40)))
case("dims-wrap-to-zero", "size-overflow",
     one_f32(dims=(1 << 32, 1 << 32)))
case("dims-wrap-to-zero-4d", "size-overflow",
     one_f32(dims=(1 << 16, 1 << 16, 1 << 16, 1 << 16)))
case("dims-zero-hides-overflow", "size-overflow",
     one_f32(dims=(0, 1 << 62, 1 << 62)))
case("bytes-overflow-f32", "size-overflow", one_f32(dims=(1 << 62,)))
case("bytes-overflow-q8_0", "size-overflow", gguf([ARCH], [
    tinfo("q", [(1 << 63) - 32], T_Q8_0, 0)]))
case("type-unknown-99", "unknown-type", gguf([ARCH], [
    tinfo("t", [8], 99, 0)], F32x8), "tensor 't'")
case("type-unknown-huge", "unknown-type", gguf([ARCH], [
    tinfo("t", [8], 0xFFFFFFFF, 0)], F32x8))
for removed in (4, 5, 31, 36, 38):
    case("type-removed-%d" % removed, "removed-type", gguf([ARCH], [
        tinfo("t", [32], removed, 0)], b"\0" * 64))
case("block-size-q4_0", "block-size", gguf([ARCH], [
    tinfo("q", [33, 2], T_Q4_0, 0)], b"\0" * 64), "tensor 'q'")
case("block-size-q8_0-16", "block-size", gguf([ARCH], [
    tinfo("q", [16], T_Q8_0, 0)], b"\0" * 32))
case("tensor-info-truncated", "truncated",
     header(1, 1) + ARCH + gstr("t") + u32(2) + i64(8))

# --- Tensor data layout -------------------------------------------------------
case("offset-unaligned", "offset-alignment", one_f32(offset=4), "tensor 't'")
case("offset-unaligned-custom", "offset-alignment",
     gguf([kv_u32("general.alignment", 64)], [
         tinfo("a", [8], T_F32, 0), tinfo("b", [8], T_F32, 32)],
         pad(F32x8, 64) * 2, align=64), "tensor 'b'")
case("offset-order", "offset-order", gguf([ARCH], [
    tinfo("a", [8], T_F32, 32), tinfo("b", [8], T_F32, 0)], F32x8 * 2),
    "tensor 'b'")
case("offset-overlap", "tensor-overlap", gguf([ARCH], [
    tinfo("a", [16], T_F32, 0), tinfo("b", [8], T_F32, 32)], F32x8 * 3),
    "tensor 'b'")
case("offset-same", "tensor-overlap", gguf([ARCH], [
    tinfo("a", [8], T_F32, 0), tinfo("b", [8], T_F32, 0)], F32x8 * 2))
case("data-past-eof", "data-bounds", gguf([ARCH], [
    tinfo("t", [64], T_F32, 0)], F32x8), "tensor 't'")
case("data-padding-past-eof", "data-bounds", gguf([ARCH], [
    tinfo("t", [1], T_F32, 0)], b"\0\0\0\0", pad_data=False))
case("offset-huge", "data-bounds", one_f32(offset=1 << 63))
case("offset-max-aligned", "data-bounds",
     one_f32(offset=(1 << 64) - 32))
case("data-section-missing", "truncated",
     header(1, 1) + ARCH + tinfo("t", [0], T_F32, 0) + b"\0")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_corpus.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    names = set()
    with open(os.path.join(out, "expected.tsv"), "w") as manifest:
        manifest.write("# file\texpected\tcontext\n")
        for name, expected, context, data in CASES:
            assert name not in names, name
            names.add(name)
            with open(os.path.join(out, name + ".gguf"), "wb") as f:
                f.write(data)
            manifest.write("%s.gguf\t%s\t%s\n" % (name, expected, context))
    print("wrote %d files to %s" % (len(CASES), out))


if __name__ == "__main__":
    main()
