"""The CUDA target's kernels, checked without a GPU.

`qcc --target=cuda` writes qcc.dequant and qcc.qmatmul in the kernel form
(include/qcc/Conversion/KernelForm.h) and maps that form to GPU blocks and
threads. `qcc --kernel-form` (CPU) lowers the very same kernel-form IR to
CPU loops instead, so here it runs on the CPU and is compared with
independent references: ggml's golden dequantization (bit for bit) and
float64 numpy for the products. Then the PTX that the CUDA target generates
for every format is assembled by the CUDA toolkit's ptxas for sm_80 and
sm_90; a rejected module fails the test.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

from qcc_step import compile_step, find_tool, golden_tensors

GOLDEN = golden_tensors()
FORMATS = sorted({name[:-2] for name in GOLDEN if name.endswith(".q")})
PTXAS = shutil.which("ptxas") or (
    "/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas")
    else None)


def golden(fmt):
    _, ne, q = GOLDEN[f"{fmt}.q"]
    _, _, deq = GOLDEN[f"{fmt}.deq"]
    rows, cols = ne[1], ne[0]
    w = np.frombuffer(deq, dtype=np.float32).reshape(rows, cols)
    return np.frombuffer(q, dtype=np.uint8), w, rows, cols


def relative_error(got, ref):
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def ops_module(fmt, n, k, m):
    """dequant, qmatmul fwd and bwd of one weight type."""
    w = f"!qcc.qtensor<{n}x{k}x{fmt}>"
    return f"""
func.func @deq(%w: {w}) -> tensor<{n}x{k}xf32> {{
  %0 = qcc.dequant %w : {w} -> tensor<{n}x{k}xf32>
  return %0 : tensor<{n}x{k}xf32>
}}
func.func @fwd(%x: tensor<{m}x{k}xf32>, %w: {w}) -> tensor<{m}x{n}xf32> {{
  %0 = qcc.qmatmul fwd %x, %w : tensor<{m}x{k}xf32>, {w} -> tensor<{m}x{n}xf32>
  return %0 : tensor<{m}x{n}xf32>
}}
func.func @bwd(%g: tensor<{m}x{n}xf32>, %w: {w}) -> tensor<{m}x{k}xf32> {{
  %0 = qcc.qmatmul bwd %g, %w : tensor<{m}x{n}xf32>, {w} -> tensor<{m}x{k}xf32>
  return %0 : tensor<{m}x{k}xf32>
}}"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_form_on_cpu_matches_references(tmp_path, fmt):
    """The GPU kernels' IR, run on the CPU: dequant bit-exact against ggml,
    qmatmul in both orientations against float64 (f32 accumulation over at
    most 512 terms: 1e-5 relative)."""
    q, w, n, k = golden(fmt)
    m = 5
    step = compile_step(ops_module(fmt, n, k, m), tmp_path, "--kernel-form")
    deq = step.call("deq", q)
    assert deq.view(np.uint32).tolist() == w.view(np.uint32).tolist()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((m, k)).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    w64 = w.astype(np.float64)
    assert relative_error(step.call("fwd", x, q), x.astype(np.float64) @ w64.T) < 1e-5
    assert relative_error(step.call("bwd", g, q), g.astype(np.float64) @ w64) < 1e-5


def test_kernel_form_ragged_batched_and_narrow_types(tmp_path):
    """Tiles cut by N = 40 (not a multiple of 32) and K = 768 (not of 256),
    a batched weight (grid z), bf16 activations and an f16 result."""
    rng = np.random.default_rng(5)
    b, m, n, k = 2, 3, 40, 768
    codes = rng.integers(-127, 128, size=(b, n, k)).astype(np.int8)
    d = np.float16(1.0 / 64)
    blocks = np.zeros((b, n, k // 32, 34), dtype=np.uint8)
    blocks[..., 0:2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
    blocks[..., 2:] = codes.reshape(b, n, k // 32, 32).view(np.uint8)
    w = codes.astype(np.float64) * float(d)
    x = rng.standard_normal((b, m, k)).astype(np.float32)
    # bf16 activations: the top half of each f32.
    x_bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)
    x_rounded = (x_bf16.astype(np.uint32) << 16).view(np.float32)
    wt = f"!qcc.qtensor<{b}x{n}x{k}xq8_0>"
    step = compile_step(f"""
func.func @mm(%x: tensor<{b}x{m}x{k}xbf16>, %w: {wt}) -> tensor<{b}x{m}x{n}xf16> {{
  %0 = qcc.qmatmul fwd %x, %w : tensor<{b}x{m}x{k}xbf16>, {wt} -> tensor<{b}x{m}x{n}xf16>
  return %0 : tensor<{b}x{m}x{n}xf16>
}}
func.func @dx(%g: tensor<{b}x{m}x{n}xf32>, %w: {wt}) -> tensor<{b}x{m}x{k}xf32> {{
  %0 = qcc.qmatmul bwd %g, %w : tensor<{b}x{m}x{n}xf32>, {wt} -> tensor<{b}x{m}x{k}xf32>
  return %0 : tensor<{b}x{m}x{k}xf32>
}}""", tmp_path, "--kernel-form")
    got = step.call("mm", x_bf16, blocks.reshape(-1)).astype(np.float64)
    ref = np.einsum("bmk,bnk->bmn", x_rounded.astype(np.float64), w)
    # f16 result: half a unit in the last place of f16 (2^-11 relative).
    assert relative_error(got, ref) < 2e-3
    g = rng.standard_normal((b, m, n)).astype(np.float32)
    got = step.call("dx", g, blocks.reshape(-1))
    assert relative_error(got, np.einsum("bmn,bnk->bmk", g.astype(np.float64), w)) < 1e-5


def compile_cuda(tmp_path, text, arch, emit="ptx"):
    src = tmp_path / "step.mlir"
    src.write_text(text)
    out = tmp_path / f"step.{emit}"
    proc = subprocess.run([find_tool("qcc"), str(src), "-o", str(out),
                           "--target=cuda", f"--gpu-arch={arch}",
                           f"--emit={emit}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def ptxas(ptx, arch):
    proc = subprocess.run([PTXAS, f"-arch={arch}", str(ptx), "-o", os.devnull],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"ptxas -arch={arch} rejected {ptx}:\n{proc.stderr}"


@pytest.mark.skipif(PTXAS is None, reason="the CUDA toolkit's ptxas is not installed")
@pytest.mark.parametrize("fmt", FORMATS)
def test_ptx_of_every_format_assembles_for_sm80_and_sm90(tmp_path, fmt):
    _, _, n, k = golden(fmt)
    text = ops_module(fmt, n, k, 5)
    ptx = compile_cuda(tmp_path, text, "sm_80")
    body = ptx.read_text()
    assert ".target sm_80" in body
    for kernel in ("deq", "fwd", "bwd"):
        assert f".entry {kernel}_kernel" in body or ".entry __qcc_kernel" in body
    # Shared-memory tiles and barriers of the qmatmul kernels.
    assert ".shared" in body and "bar.sync" in body
    ptxas(ptx, "sm_80")
    ptxas(ptx, "sm_90")
    ptx90 = compile_cuda(tmp_path, text, "sm_90")
    assert ".target sm_90" in ptx90.read_text()
    ptxas(ptx90, "sm_90")


def test_cuda_step_library_links_and_declares_its_target(tmp_path):
    """The shared library of a CUDA step: the entry points of the step ABI,
    the mgpu* launch functions resolved inside it (no libcuda link), and a
    manifest that says target cuda."""
    _, _, n, k = golden("q4_K")
    so = compile_cuda(tmp_path, ops_module("q4_K", n, k, 5), "sm_90", emit="so")
    syms = subprocess.run(["nm", "-D", str(so)], capture_output=True,
                          text=True, check=True).stdout
    for entry in ("qcc_entry_deq", "qcc_entry_fwd", "qcc_entry_bwd"):
        assert f" T {entry}" in syms
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True,
                            text=True, check=True).stdout
    assert "libcuda" not in needed
    assert b'\\22target\\22:\\22cuda\\22' not in so.read_bytes()  # JSON, not escaped
    assert b'"target":"cuda"' in so.read_bytes()
    assert b'"gpu_arch":"sm_90"' in so.read_bytes()


@pytest.mark.parametrize("op", ["requant"])
def test_ops_without_device_encoders_are_rejected_clearly(tmp_path, op):
    if op == "requant":
        w = "!qcc.qtensor<4x32xq8_0>"
        text = f"""
func.func @f(%x: tensor<4x32xf32>) -> {w} {{
  %0 = qcc.requant %x : tensor<4x32xf32> -> {w}
  return %0 : {w}
}}"""
    else:
        fmt, shape = "iq2_xs", "4x256"
        w = f"!qcc.qtensor<{shape}x{fmt}>"
        jl = ""
        carry = f"tensor<{shape}xf32>"
        text = f"""
func.func @f(%w: {w}, %c: {carry}, %d: tensor<{shape}xf32>) -> ({w}, {carry}) {{
  %0, %1 = qcc.carry_update %w, %c, %d{jl} : {w}, {carry}, tensor<{shape}xf32>
  return %0, %1 : {w}, {carry}
}}"""
    src = tmp_path / "step.mlir"
    src.write_text(text)
    out = tmp_path / "step.so"
    proc = subprocess.run([find_tool("qcc"), str(src), "-o", str(out),
                           "--target=cuda"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "step.mlir:3" in proc.stderr, proc.stderr
    assert "not supported by the kernel form (--target=cuda) yet" in proc.stderr
    assert not out.exists()


DEVICE_ENCODED = FORMATS  # every format has a kernel-form carry_update
# runtime/include/qcc/Runtime/Formats.h formatRequiresImportance
NEEDS_IMPORTANCE = {"iq2_xxs", "iq2_xs", "iq1_s"}


def assert_same_carry_update(fmt, q, got, want):
    """The kernel's weights and carry are the runtime's, bit for bit, and
    the update moved some blocks but not all (none for the formats that
    are encoded only with an importance matrix, which carry_update has
    not: the runtime, and the kernel, keep every block)."""
    for a, b in zip(got, want):
        assert np.asarray(a).view(np.uint8).tobytes() == np.asarray(b).view(np.uint8).tobytes()
    moved = np.asarray(want[0]).view(np.uint8) != q
    if fmt in NEEDS_IMPORTANCE:
        assert not moved.any()
    else:
        assert moved.any() and not moved.all()


@pytest.mark.parametrize("fmt", DEVICE_ENCODED)
@pytest.mark.parametrize("carry_type", ["f32", "bf16"])
def test_kernel_form_carry_update_is_bit_identical_to_the_runtime(tmp_path, fmt, carry_type):
    """carry_update in the kernel form (one block per thread, re-encoded by
    qcc_rt_encode_block, the function CUDA steps link as device bitcode)
    against the runtime's qcc_rt_carry_update that the CPU path calls: the
    same weight bytes and carry bits, including a block left as it was for
    a non-finite update and blocks that move."""
    _, ne, q = GOLDEN[f"{fmt}.q"]
    rows, cols = ne[1], ne[0]
    q = np.frombuffer(q, np.uint8)
    w = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    ct = f"tensor<{rows}x{cols}x{carry_type}>"
    text = f"""
func.func @f(%w: {w}, %c: {ct}, %d: tensor<{rows}x{cols}xf32>) -> ({w}, {ct}) {{
  %0, %1 = qcc.carry_update %w, %c, %d : {w}, {ct}, tensor<{rows}x{cols}xf32>
  return %0, %1 : {w}, {ct}
}}"""
    runtime = compile_step(text, tmp_path / "runtime")
    kernel = compile_step(text, tmp_path / "kernel", "--kernel-form")
    rng = np.random.default_rng(1)
    c = (rng.standard_normal((rows, cols)) * 0.01).astype(np.float32)
    if carry_type == "bf16":
        c = (c.view(np.uint32) >> 16).astype(np.uint16)
    d = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    d[0, 3] = np.inf
    want = runtime.call("f", q, c, d)
    got = kernel.call("f", q, c, d)
    assert_same_carry_update(fmt, q, got, want)


@pytest.mark.skipif(PTXAS is None, reason="the CUDA toolkit's ptxas is not installed")
def _jl_carry_module(fmt, rows, cols, dim, chunk, carry_type):
    w = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    ct = f"tensor<{rows}x{cols * dim // chunk}x{carry_type}>"
    return f"""
func.func @f(%w: {w}, %c: {ct}, %d: tensor<{rows}x{cols}xf32>) -> ({w}, {ct}) {{
  %0, %1 = qcc.carry_update %w, %c, %d {{jl = #qcc.jl<dim = {dim}, chunk = {chunk}, seed = 7>}} : {w}, {ct}, tensor<{rows}x{cols}xf32>
  return %0, %1 : {w}, {ct}
}}"""


@pytest.mark.parametrize("fmt,chunk", [("q4_K", 256), ("q8_0", 64), ("q6_K", 512)])
@pytest.mark.parametrize("carry_type", ["f32", "bf16"])
def test_kernel_form_jl_carry_update_is_bit_identical_to_the_runtime(tmp_path, fmt, chunk, carry_type):
    """A JL-sketched carry (dim 16 per chunk of weights, P = ±1/4 from
    splitmix signs computed in the kernel): the kernel form against the
    runtime's qcc_rt_carry_update, bit for bit, a non-finite chunk
    included; chunks of one, several and two K-quant blocks."""
    _, ne, q = GOLDEN[f"{fmt}.q"]
    rows, cols = ne[1], ne[0]
    q = np.frombuffer(q, np.uint8)
    dim = 16
    text = _jl_carry_module(fmt, rows, cols, dim, chunk, carry_type)
    runtime = compile_step(text, tmp_path / "runtime")
    kernel = compile_step(text, tmp_path / "kernel", "--kernel-form")
    rng = np.random.default_rng(3)
    c = (rng.standard_normal((rows, cols * dim // chunk)) * 0.02).astype(np.float32)
    if carry_type == "bf16":
        c = (c.view(np.uint32) >> 16).astype(np.uint16)
    d = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    d[1, 5] = np.nan
    want = runtime.call("f", q, c, d)
    got = kernel.call("f", q, c, d)
    assert_same_carry_update(fmt, q, got, want)


@pytest.mark.skipif(PTXAS is None, reason="the CUDA toolkit's ptxas is not installed")
def test_jl_carry_update_ptx_assembles(tmp_path):
    ptx = compile_cuda(tmp_path, _jl_carry_module("q4_K", 16, 512, 16, 256, "bf16"),
                       "sm_80", emit="ptx")
    assert ".extern .func" not in ptx.read_text()
    ptxas(ptx, "sm_80")
    ptxas(ptx, "sm_90")


def test_training_step_with_carry_update_compiles_for_cuda(tmp_path):
    """examples/train_step.mlir (q4_K weights, bf16 carry, SGD through
    carry_update) builds for CUDA with the block encoder linked into the
    PTX (not an unresolved extern); ptxas accepts it."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                             "train_step.mlir")).read()
    for arch in ("sm_80", "sm_90"):
        ptx = compile_cuda(tmp_path, text, arch, emit="ptx")
        body = ptx.read_text()
        # Linked (and inlined): no unresolved call, the encoder's tables in.
        assert ".extern .func" not in body
        assert "qcc_rt_encode_block" in body
        assert ".entry __qcc_kernel_qcc_carry_update" in body
        ptxas(ptx, arch)


def test_whole_cuda_step_runs_in_kernel_form_like_the_cpu_path(tmp_path):
    """test/tools/qcc/Inputs/grad_step.mlir (hadamard, both qmatmuls, a full
    reduction, a linalg weight gradient, a clipped STE) compiles for CUDA;
    compiled for the CPU in the kernel form it gives what the CPU path
    gives (the same f32 sums in another order: 1e-5 relative)."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "tools", "qcc",
                             "Inputs", "grad_step.mlir")).read()
    cuda_dir = tmp_path / "cuda"
    cuda_dir.mkdir()
    compile_cuda(cuda_dir, text, "sm_80", emit="so")
    # 64 x 256 q4_K weights: ggml's golden blocks, repeated.
    q = np.resize(golden("q4_K")[0], 64 * 144)
    cpu = compile_step(text, tmp_path / "cpu")
    kern = compile_step(text, tmp_path / "kernel", "--kernel-form")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    t = rng.standard_normal((4, 64)).astype(np.float32)
    want = cpu.call("grad_step", q, x, t)
    got = kern.call("grad_step", q, x, t)
    for a, b in zip(got, want):
        assert relative_error(np.asarray(a, np.float64), np.asarray(b, np.float64)) < 1e-5


def test_every_launch_passes_what_its_kernel_declares(tmp_path):
    """The host code's launches and the kernels agree on the calling
    convention: for each mgpuLaunchKernel in the host LLVM IR, the number of
    parameters passed equals the number of .param of that .entry in the PTX
    (a mismatch reads garbage on the device; it once happened when the host
    passed bare pointers to kernels expecting memref descriptors)."""
    import re
    text = open(os.path.join(os.path.dirname(__file__), "..", "tools", "qcc",
                             "Inputs", "grad_step.mlir")).read()
    ptx = compile_cuda(tmp_path, text, "sm_80", emit="ptx").read_text()
    ll = compile_cuda(tmp_path, text, "sm_80", emit="llvm").read_text()
    declared = {m.group(1): m.group(2).count(".param")
                for m in re.finditer(r"\.entry (\S+)\(([^)]*)\)", ptx)}
    names = dict(re.findall(
        r'@(\S+_name) = private unnamed_addr constant \[\d+ x i8\] c"([^\\]+)\\00"', ll))
    launches = re.findall(
        r"call ptr @mgpuModuleGetFunction\(ptr %\d+, ptr nonnull @(\S+)\)\n"
        r"\s+call void @mgpuLaunchKernel\(.*, i64 (\d+)\)", ll)
    assert len(launches) >= 10
    for sym, count in launches:
        assert declared[names[sym]] == int(count), names[sym]


def test_llama_forward_compiles_for_cuda_and_its_kernel_form_runs(tmp_path):
    """The forward pass of a whole llama-architecture model (embedding,
    RMSNorm, RoPE, GQA attention, SwiGLU, q8_0 weights), as the frontend
    traces it, compiles for CUDA; its kernel form on the CPU gives the
    default CPU path's logits (1e-4 relative: four layers of f32 sums in
    another order, through softmax)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
    from qcc import train
    from qcc.models import llama
    from qcc.runtime import Session
    model_path = tmp_path / "tiny.gguf"
    subprocess.run([sys.executable, "-m", "qcc.models.tiny", str(model_path),
                    "--format", "q8_0", "--layers", "2"], check=True,
                   capture_output=True)
    cfg, model, _ = llama.load(str(model_path))
    seq = 16
    text = train.build_forward(model, 1, seq)
    (tmp_path / "cuda").mkdir()
    compile_cuda(tmp_path / "cuda", text, "sm_80", emit="so")
    tokens = np.random.default_rng(8).integers(0, cfg.vocab, (1, seq)).astype(np.int32)
    logits = {}
    for name, flags in (("cpu", []), ("kernel", ["--kernel-form"])):
        so = tmp_path / f"{name}.so"
        src = tmp_path / "forward.mlir"
        src.write_text(text)
        subprocess.run([find_tool("qcc"), str(src), "-o", str(so), *flags],
                       check=True)
        with Session(str(so), str(model_path), "forward") as s:
            s.set_input("tokens", tokens)
            s.run()
            logits[name] = s.result("logits").astype(np.float64)
    assert relative_error(logits["kernel"], logits["cpu"]) < 1e-4


@pytest.mark.skipif(PTXAS is None, reason="the CUDA toolkit's ptxas is not installed")
def test_lora_training_step_compiles_for_cuda(tmp_path):
    """examples/train_lora.mlir (frozen q4_K base, LoRA factors, AdamW with
    a step counter the host reads and writes back) builds for CUDA: the
    scalar crosses through host slots, everything else runs in kernels; its
    PTX assembles for sm_80 and sm_90."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                             "train_lora.mlir")).read()
    ptx = compile_cuda(tmp_path, text, "sm_80", emit="ptx")
    ptxas(ptx, "sm_80")
    ptxas(ptx, "sm_90")
    compile_cuda(tmp_path, text, "sm_90", emit="so")


@pytest.mark.skipif(PTXAS is None, reason="the CUDA toolkit's ptxas is not installed")
@pytest.mark.parametrize("fmt", DEVICE_ENCODED)
def test_carry_update_ptx_of_every_device_encoded_format_assembles(tmp_path, fmt):
    """carry_update for each format with a device encoder: the encoder is
    linked (no unresolved extern) and ptxas accepts the module for sm_80
    and sm_90."""
    _, ne, _ = GOLDEN[f"{fmt}.q"]
    rows, cols = ne[1], ne[0]
    w = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    ct = f"tensor<{rows}x{cols}xbf16>"
    text = f"""
func.func @f(%w: {w}, %c: {ct}, %d: tensor<{rows}x{cols}xf32>) -> ({w}, {ct}) {{
  %0, %1 = qcc.carry_update %w, %c, %d : {w}, {ct}, tensor<{rows}x{cols}xf32>
  return %0, %1 : {w}, {ct}
}}"""
    ptx = compile_cuda(tmp_path, text, "sm_80", emit="ptx")
    assert ".extern .func" not in ptx.read_text()
    ptxas(ptx, "sm_80")
    ptxas(ptx, "sm_90")


SCALED = [f for f in FORMATS if f not in ("f32", "f16", "bf16")]


def _block_elems():
    """name -> elements per block, from the formats' one home."""
    import re
    path = os.path.join(os.path.dirname(__file__), "..", "..", "runtime",
                        "include", "qcc", "Runtime", "Formats.def")
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'QCC_FORMAT\(\w+,\s*"(\w+)",\s*\d+,\s*(\d+),', open(path).read())}


BLOCK_ELEMS = _block_elems()


@pytest.mark.parametrize("fmt", SCALED)
def test_kernel_form_lsq_scale_gradient_and_scale_update_match_the_runtime(tmp_path, fmt):
    """ste_grad lsq's block-scale gradient and qcc.scale_update in the
    kernel form (one block per thread; scale fields read and written in the
    kernel) against the runtime's qcc_rt_lsq_scale_grad and
    qcc_rt_scale_update that the CPU path calls: the same bits. The deltas
    include one that would flip a scale's sign and one that is not finite
    (the runtime keeps those blocks' scales, and so does the kernel)."""
    _, ne, q = GOLDEN[f"{fmt}.q"]
    rows, cols = ne[1], ne[0]
    q = np.frombuffer(q, np.uint8)
    w = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    t = f"tensor<{rows}x{cols}xf32>"
    block_elems = BLOCK_ELEMS[fmt]
    st = f"tensor<{rows}x{cols // block_elems}xf32>"
    text = f"""
func.func @lsq(%g: {t}, %w: {w}) -> ({t}, {st}) {{
  %d, %s = qcc.ste_grad lsq %g, %w : {t}, {w} -> {t}, {st}
  return %d, %s : {t}, {st}
}}"""
    if fmt != "nvfp4":
        text += f"""
func.func @upd(%w: {w}, %delta: {st}) -> {w} {{
  %0 = qcc.scale_update %w, %delta : {w}, {st}
  return %0 : {w}
}}"""
    runtime = compile_step(text, tmp_path / "runtime")
    kernel = compile_step(text, tmp_path / "kernel", "--kernel-form")
    rng = np.random.default_rng(4)
    g = rng.standard_normal((rows, cols)).astype(np.float32)
    for a, b in zip(kernel.call("lsq", g, q), runtime.call("lsq", g, q)):
        assert np.asarray(a).view(np.uint8).tobytes() == np.asarray(b).view(np.uint8).tobytes()
    if fmt == "nvfp4":
        return
    delta = (rng.standard_normal((rows, cols // block_elems)) * 1e-3).astype(np.float32)
    delta[0, 0] = -1e9   # would flip the sign of the scale
    delta[1, 0] = np.inf
    got, want = kernel.call("upd", q, delta), runtime.call("upd", q, delta)
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    assert np.asarray(want).tobytes() != q.tobytes()


@pytest.mark.skipif(PTXAS is None, reason="the CUDA toolkit's ptxas is not installed")
@pytest.mark.parametrize("fmt", ["q4_K", "mxfp4", "iq1_m", "iq2_xxs"])
def test_lsq_and_scale_update_ptx_assembles(tmp_path, fmt):
    """The LSQ scale gradient and scale_update kernels (f16, e8m0 through
    log2 from libdevice, iq1_m's split f16) build for CUDA; ptxas accepts
    them for sm_80 and sm_90."""
    _, ne, _ = GOLDEN[f"{fmt}.q"]
    rows, cols = ne[1], ne[0]
    w = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    t = f"tensor<{rows}x{cols}xf32>"
    st = f"tensor<{rows}x{cols // BLOCK_ELEMS[fmt]}xf32>"
    text = f"""
func.func @lsq(%g: {t}, %w: {w}) -> ({t}, {st}) {{
  %d, %s = qcc.ste_grad lsq %g, %w : {t}, {w} -> {t}, {st}
  return %d, %s : {t}, {st}
}}
func.func @upd(%w: {w}, %delta: {st}) -> {w} {{
  %0 = qcc.scale_update %w, %delta : {w}, {st}
  return %0 : {w}
}}"""
    ptx = compile_cuda(tmp_path, text, "sm_80", emit="ptx")
    assert ".extern .func" not in ptx.read_text()
    ptxas(ptx, "sm_80")
    ptxas(ptx, "sm_90")
