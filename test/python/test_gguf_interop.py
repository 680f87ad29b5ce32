"""Interoperability of qcc's GGUF writer and codecs with the PyPI `gguf` package.

Files are written by gguf-py's GGUFWriter, transformed by `qcc-gguf`, and
read back by gguf-py's GGUFReader: metadata must come back identical and
tensor bytes unchanged (or, for re-quantized tensors, decodable by
`gguf.quants.dequantize` to the same floats `qcc-gguf dequant` produces).
The binary is found at $QCC_BUILD_DIR/bin/qcc-gguf (default: build).
"""

import os
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFReader, GGUFValueType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))
QCC_GGUF = os.path.join(BUILD, "bin", "qcc-gguf")


@pytest.fixture(scope="module")
def tool():
    if not os.access(QCC_GGUF, os.X_OK):
        pytest.fail("qcc-gguf not built at %s (set QCC_BUILD_DIR)" % QCC_GGUF)
    return QCC_GGUF


def run(*args, check=True):
    proc = subprocess.run([QCC_GGUF, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError("qcc-gguf %s failed (%d): %s" %
                             (" ".join(args), proc.returncode, proc.stderr))
    return proc


def rows(seed, n_rows, n_cols):
    """Weights with a spread of scales, like the golden file's rows."""
    rng = np.random.default_rng(seed)
    scales = np.array([0.02, 1.0, 1e-3, 30.0])[np.arange(n_rows) % 4]
    x = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
    return (x * scales[:, None].astype(np.float32)).astype(np.float32)


METADATA = [
    ("t.u8", 200, GGUFValueType.UINT8),
    ("t.i8", -100, GGUFValueType.INT8),
    ("t.u16", 60000, GGUFValueType.UINT16),
    ("t.i16", -30000, GGUFValueType.INT16),
    ("t.u32", 4000000000, GGUFValueType.UINT32),
    ("t.i32", -2000000000, GGUFValueType.INT32),
    ("t.f32", 0.1, GGUFValueType.FLOAT32),
    ("t.bool", True, GGUFValueType.BOOL),
    ("t.str", "h\u00e9llo \u2603", GGUFValueType.STRING),
    ("t.u64", 2**63 + 5, GGUFValueType.UINT64),
    ("t.i64", -(2**62), GGUFValueType.INT64),
    ("t.f64", 1e-300, GGUFValueType.FLOAT64),
]
ARRAYS = [
    ("t.arr.str", ["a", "", "tokens \u00fc", "x" * 300]),
    ("t.arr.i32", [1, -2, 3]),
    ("t.arr.f32", [0.5, -1.25]),
]


def write_input(path):
    w = gguf.GGUFWriter(path, "qcc-interop")
    for key, val, vtype in METADATA:
        w.add_key_value(key, val, vtype)
    for key, val in ARRAYS:
        w.add_array(key, val)
    w.add_tensor("w2d", rows(1, 16, 512))
    w.add_tensor("bias", rows(2, 1, 512).reshape(512))
    w.add_tensor("emb", rows(3, 8, 256).astype(np.float16))
    w.add_tensor("ids", np.arange(32, dtype=np.int32).reshape(4, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def fields(reader):
    """Metadata as {key: python value} (gguf-py's own decoding)."""
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue  # header pseudo-fields
        val = field.contents()
        out[name] = (list(field.types), val)
    return out


def tensor_map(reader):
    return {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def src_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gguf") / "in.gguf")
    write_input(path)
    return path


def test_copy_preserves_metadata_and_bytes(tool, src_file, tmp_path):
    out = str(tmp_path / "copy.gguf")
    # A regex that matches nothing: qcc re-writes the whole file unchanged
    # apart from the two quantization keys it always sets.
    run("quantize", src_file, out, "--type", "q8_0", "--tensors", "^$")
    run("verify", out)
    a, b = GGUFReader(src_file), GGUFReader(out)
    fa, fb = fields(a), fields(b)
    assert fb.pop("general.quantization_version") == ([GGUFValueType.UINT32], 2)
    assert fb.pop("general.file_type") == ([GGUFValueType.UINT32], 7)
    assert fa == fb
    ta, tb = tensor_map(a), tensor_map(b)
    assert list(ta) == list(tb)
    for name, t in ta.items():
        u = tb[name]
        assert u.tensor_type == t.tensor_type
        assert list(u.shape) == list(t.shape)
        assert bytes(u.data.tobytes()) == bytes(t.data.tobytes()), name


def test_info_json_agrees_with_gguf_py(tool, src_file):
    import json
    info = json.loads(run("info", "--json", src_file).stdout)
    r = GGUFReader(src_file)
    assert [t["name"] for t in info["tensors"]] == [t.name for t in r.tensors]
    for tj, t in zip(info["tensors"], r.tensors):
        assert tj["ne"] == [int(x) for x in t.shape]
        assert tj["type_id"] == int(t.tensor_type)
        assert tj["file_offset"] == t.data_offset
        assert tj["nbytes"] == t.n_bytes
    meta = {m["key"]: m["value"] for m in info["metadata"]}
    for key, val, _ in METADATA:
        if isinstance(val, float):
            assert meta[key] == pytest.approx(val, rel=1e-6)
        else:
            assert meta[key] == val
    for key, val in ARRAYS:
        if key.endswith("f32"):
            assert meta[key] == pytest.approx(val)
        else:
            assert meta[key] == val


# Types gguf-py can decode and qcc can encode without an importance matrix,
# plus the three that need one (fed through --imatrix).
PLAIN_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K",
               "q5_K", "q6_K", "iq4_nl", "iq4_xs", "iq3_xxs", "iq3_s",
               "iq2_s", "iq1_m", "tq1_0", "tq2_0", "mxfp4", "bf16", "f16"]
IMATRIX_TYPES = ["iq2_xxs", "iq2_xs", "iq1_s"]


def write_imatrix(path, names_cols):
    w = gguf.GGUFWriter(path, "imatrix")
    w.add_key_value("imatrix.chunk_count", 1, GGUFValueType.UINT32)
    for name, cols in names_cols:
        imp = (1.0 + (np.arange(cols) % 7) / 7.0).astype(np.float32)
        w.add_tensor(name + ".in_sum2", (imp * 10.0).reshape(1, cols))
        w.add_tensor(name + ".counts", np.array([[10.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def qtype_of(name):
    return {"q2_K": QT.Q2_K, "q3_K": QT.Q3_K, "q4_K": QT.Q4_K, "q5_K": QT.Q5_K,
            "q6_K": QT.Q6_K}.get(name) or QT[name.upper()]


@pytest.mark.parametrize("type_name", PLAIN_TYPES + IMATRIX_TYPES)
def test_quantize_then_dequantize_agrees(tool, src_file, tmp_path, type_name):
    out = str(tmp_path / ("q-%s.gguf" % type_name))
    args = ["quantize", src_file, out, "--type", type_name]
    if type_name in IMATRIX_TYPES:
        imat = str(tmp_path / "imatrix.gguf")
        write_imatrix(imat, [("w2d", 512), ("emb", 256)])
        args += ["--imatrix", imat]
    proc = run(*args, check=False)
    if proc.returncode == 1 and "not supported" in proc.stderr:
        # The codec library does not encode this format (yet).
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    r = GGUFReader(out)
    t = tensor_map(r)
    qt = qtype_of(type_name)
    # Default selection: every tensor with >= 2 dims whose rows split into
    # blocks; 1-D and integer tensors are copied.
    assert t["w2d"].tensor_type == qt
    assert t["bias"].tensor_type == QT.F32
    assert t["ids"].tensor_type == QT.I32
    emb_expected = qt if 256 % gguf.GGML_QUANT_SIZES[qt][0] == 0 else QT.F16
    assert t["emb"].tensor_type == emb_expected, proc.stderr
    src = GGUFReader(src_file)
    st = tensor_map(src)
    assert t["bias"].data.tobytes() == st["bias"].data.tobytes()
    assert t["ids"].data.tobytes() == st["ids"].data.tobytes()
    for name in ("w2d", "emb"):
        deq_path = str(tmp_path / (name + ".f32"))
        run("dequant", out, name, "-o", deq_path)
        ours = np.fromfile(deq_path, dtype="<f4")
        try:
            theirs = dequantize(t[name].data, t[name].tensor_type).reshape(-1)
        except NotImplementedError:
            pytest.skip("gguf-py cannot dequantize %s" % type_name)
        assert ours.shape == theirs.shape
        # gguf-py reimplements ggml's formulas in numpy; both must give the
        # same floats bit for bit.
        np.testing.assert_array_equal(
            ours.view("<u4"), theirs.astype(np.float32).view("<u4"),
            err_msg=name)
        # And the result is actually a quantization of the input.
        ref = st[name].data.astype(np.float32).reshape(-1)
        err = np.sqrt(np.mean((ours - ref) ** 2)) / np.sqrt(np.mean(ref ** 2))
        assert err < 0.9, (name, err)
    md = fields(r)
    assert md["general.quantization_version"][1] == 2


def test_file_type_numbering(tool, src_file, tmp_path):
    """general.file_type follows llama.cpp's LLAMA_FTYPE (gguf-py's enum)."""
    from gguf import LlamaFileType as FT
    expect = {"q4_0": FT.MOSTLY_Q4_0, "q8_0": FT.MOSTLY_Q8_0,
              "q4_K": FT.MOSTLY_Q4_K_M, "q6_K": FT.MOSTLY_Q6_K,
              "iq4_xs": FT.MOSTLY_IQ4_XS, "bf16": FT.MOSTLY_BF16,
              "tq2_0": FT.MOSTLY_TQ2_0}
    for name, ft in expect.items():
        out = str(tmp_path / ("ft-%s.gguf" % name))
        run("quantize", src_file, out, "--type", name)
        assert fields(GGUFReader(out))["general.file_type"][1] == int(ft)


def test_quantize_refuses_its_input_and_bad_flags(tool, src_file, tmp_path):
    link = str(tmp_path / "same.gguf")
    os.link(src_file, link)
    before = open(src_file, "rb").read()
    p = run("quantize", src_file, link, "--type", "q8_0", check=False)
    assert p.returncode == 1 and "input" in p.stderr
    assert open(src_file, "rb").read() == before
    assert run("quantize", src_file, check=False).returncode == 2
    assert run("quantize", src_file, link, "--type", "nope", check=False).returncode == 2
    assert run("quantize", src_file, link, "--type", "q8_0", "--frob",
               check=False).returncode == 2
    assert run("quantize", src_file, link, "--type", "q8_0", "--tensors", "(",
               check=False).returncode == 2
    assert run("dequant", src_file, "w2d", check=False).returncode == 2
    assert run(check=False).returncode == 2
    # An explicit selection that cannot be honoured is an error (ne0 = 512
    # is fine, but a 1-D bias of 512 to q4_K is fine too; ids are int32).
    p = run("quantize", src_file, str(tmp_path / "x.gguf"), "--type", "q8_0",
            "--tensors", "^ids$", check=False)
    assert p.returncode == 1
    assert not os.path.exists(str(tmp_path / "x.gguf"))


def test_imatrix_per_expert(tool, tmp_path):
    """A stacked-experts tensor gets one importance vector per expert."""
    src = str(tmp_path / "experts.gguf")
    w = gguf.GGUFWriter(src, "qcc-interop")
    x = rows(7, 2 * 4, 256).reshape(2, 4, 256)  # ne = [256, 4, 2]
    w.add_tensor("blk.0.ffn_up_exps.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    def quantize_with(sums, name):
        imat = str(tmp_path / ("imat-%s.gguf" % name))
        iw = gguf.GGUFWriter(imat, "imatrix")
        iw.add_tensor("blk.0.ffn_up_exps.weight.in_sum2", sums.astype(np.float32))
        iw.add_tensor("blk.0.ffn_up_exps.weight.counts",
                      np.array([[4.0], [0.0]], dtype=np.float32))
        iw.write_header_to_file()
        iw.write_kv_data_to_file()
        iw.write_tensors_to_file()
        iw.close()
        out = str(tmp_path / ("q-%s.gguf" % name))
        run("quantize", src, out, "--type", "iq2_xxs", "--imatrix", imat)
        deq = str(tmp_path / ("d-%s.f32" % name))
        run("dequant", out, "blk.0.ffn_up_exps.weight", "-o", deq)
        return np.fromfile(deq, dtype="<f4").reshape(2, 4, 256)

    ramp = np.linspace(0.01, 10.0, 256, dtype=np.float32)
    a = quantize_with(np.stack([ramp, ramp]), "a")
    b = quantize_with(np.stack([ramp[::-1], ramp]), "b")
    # Expert 0's importance changed, expert 1's did not (and expert 1 has a
    # zero count, so its importance is all ones either way).
    assert not np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    # A shape mismatch between imatrix and tensor is an error.
    bad = str(tmp_path / "bad.gguf")
    iw = gguf.GGUFWriter(bad, "imatrix")
    iw.add_tensor("blk.0.ffn_up_exps.weight.in_sum2", np.ones((1, 128), np.float32))
    iw.add_tensor("blk.0.ffn_up_exps.weight.counts", np.ones((1, 1), np.float32))
    iw.write_header_to_file()
    iw.write_kv_data_to_file()
    iw.write_tensors_to_file()
    iw.close()
    p = run("quantize", src, str(tmp_path / "x.gguf"), "--type", "q4_K",
            "--imatrix", bad, check=False)
    assert p.returncode == 1 and "does not match" in p.stderr


def test_quantize_type_rules(tool, src_file, tmp_path):
    """--tensor-type REGEX=TYPE (first match wins) over --type; each
    converted tensor decodes (gguf-py) to what qcc-gguf dequant gives of a
    single-type quantization to the same type."""
    out = str(tmp_path / "mix.gguf")
    run("quantize", src_file, out, "--tensor-type", "^w2d$=q4_K",
        "--tensor-type", "w=q6_K", "--tensor-type", "emb=Q8_0", "--type", "q5_0")
    t = tensor_map(GGUFReader(out))
    assert t["w2d"].tensor_type == QT.Q4_K
    assert t["emb"].tensor_type == QT.Q8_0
    assert t["bias"].tensor_type == QT.F32  # 1-D: --type skips it
    assert t["ids"].tensor_type == QT.I32
    single = str(tmp_path / "q4k.gguf")
    run("quantize", src_file, single, "--type", "q4_K", "--tensors", "^w2d$")
    assert bytes(tensor_map(GGUFReader(single))["w2d"].data) == bytes(t["w2d"].data)
    # Only rules: what they do not name stays as it was, and so does the
    # file type.
    only = str(tmp_path / "only.gguf")
    run("quantize", src_file, only, "--tensor-type", "emb=q4_0")
    t = tensor_map(GGUFReader(only))
    assert t["emb"].tensor_type == QT.Q4_0
    assert t["w2d"].tensor_type == QT.F32
    assert "general.file_type" not in fields(GGUFReader(only))


def test_quantize_types_from(tool, src_file, tmp_path):
    """--types-from REF: every tensor REF has takes REF's type, and the
    file type is REF's; tensors REF lacks fall to --type."""
    ref = str(tmp_path / "ref.gguf")
    w = gguf.GGUFWriter(ref, "qcc-interop")
    w.add_uint32("general.file_type", 10)
    w.add_tensor("w2d", np.zeros((16, 512), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    mixed = str(tmp_path / "ref-q.gguf")
    run("quantize", ref, mixed, "--tensor-type", "w2d=q3_K")
    out = str(tmp_path / "out.gguf")
    run("quantize", src_file, out, "--types-from", mixed, "--type", "q8_0")
    r = GGUFReader(out)
    t = tensor_map(r)
    assert t["w2d"].tensor_type == QT.Q3_K
    assert t["emb"].tensor_type == QT.Q8_0
    assert fields(r)["general.file_type"][1] == 10


@pytest.mark.parametrize("args,code,msg", [
    (["--tensor-type", "ids=q8_0"], 1, "cannot quantize 'ids' to q8_0"),
    (["--tensor-type", "^ids$=q4_K"], 1, "(--tensor-type ^ids$=q4_K)"),
    (["--tensor-type", "w2d"], 2, "is not REGEX=TYPE"),
    (["--tensor-type", "w2d=q9"], 2, "unknown type"),
    (["--tensor-type", "(=q8_0"], 2, "bad regex"),
    (["--tensors", "w2d"], 2, "--tensors selects"),
    (["--types-from", "/no/such.gguf"], 1, "/no/such.gguf"),
    ([], 2, "give --type"),
])
def test_quantize_rule_errors(tool, src_file, tmp_path, args, code, msg):
    out = str(tmp_path / "x.gguf")
    p = run("quantize", src_file, out, *args, check=False)
    assert p.returncode == code, p.stderr
    assert msg in p.stderr.splitlines()[0]
    assert not os.path.exists(out)
