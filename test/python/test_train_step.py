"""The training step qcc.train builds: its IR (the unfused update form that
qcc-fuse-weight-update turns into one qcc.weight_update per quantized
weight), and every option compiled and run for a few steps through the
runtime's C API."""

import os
import subprocess

import numpy as np
import pytest

import frontend_util as fu
from qcc_step import find_tool
from qcc import optim, train
from qcc.models import llama, tiny
from qcc.runtime import Session

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "devils-dictionary.txt")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("m") / "tiny.gguf")
    tiny.make_model(p, "q8_0", d_model=64, n_layer=1, n_head=2, n_head_kv=1,
                    d_ff=128)
    return p


def build(path, opts=None, batch=4, seq=16):
    cfg, model, info = llama.load(path)
    return cfg, train.build_train_step(model, batch, seq, opts or train.TrainOptions())


def test_full_step_ir_and_fusion(model_path):
    cfg, prog = build(model_path)
    text = prog.text
    fu.filecheck(text, """
CHECK: func.func @train_step(%arg0: tensor<4x16xi32> {qcc.name = "tokens", qcc.role = "input"}, %arg1: tensor<4x16xi32> {qcc.name = "targets", qcc.role = "input"}, %arg2: !qcc.qtensor<256x64xq8_0> {qcc.name = "token_embd.weight", qcc.role = "weight"}
CHECK-SAME: {qcc.name = "blk.0.attn_norm.weight", qcc.role = "weight"}
CHECK-SAME: %{{.*}}: f32 {qcc.name = "lr", qcc.role = "input"}
CHECK-SAME: tensor<256x64xbf16> {qcc.name = "token_embd.weight.carry", qcc.role = "state"}
CHECK-SAME: tensor<256x64xbf16> {qcc.name = "token_embd.weight.adam_m", qcc.role = "state"}
CHECK-SAME: -> (tensor<f32> {qcc.name = "loss"}, !qcc.qtensor<256x64xq8_0> {qcc.name = "token_embd.weight"}, tensor<256x64xbf16> {qcc.name = "token_embd.weight.carry", qcc.role = "state"}
CHECK: qcc.ste_grad identity
CHECK: qcc.dequant
CHECK: math.sqrt
CHECK: qcc.carry_update %arg2, %{{.*}} : !qcc.qtensor<256x64xq8_0>, tensor<256x64xbf16>, tensor<256x64xf32> loc(#{{loc[0-9]+}})
""")
    # Locations: the model's ops point at the model code (qcc/models/llama.py),
    # their gradients at the same lines as "backward", the updates at qcc.train.
    assert 'loc("' in text and 'models/llama.py":' in text
    assert 'loc("backward"("' in text and 'models/llama.py":' in text
    assert 'loc("update blk.0.ffn_up.weight"("' in text
    n_quant = sum(1 for n in cfg.expected_tensors() if len(cfg.expected_tensors()[n]) == 2)
    assert text.count("qcc.carry_update") == n_quant
    fused = subprocess.run(
        [find_tool("qcc-opt"), "-", "-canonicalize", "-qcc-fuse-dequant-into-matmul",
         "-qcc-lower-ste", "-canonicalize", "-qcc-fuse-weight-update"],
        input=text, capture_output=True, text=True)
    assert fused.returncode == 0, fused.stderr
    # Every quantized weight's gradient, rule and carry update fuse into one
    # pass over the weight (the tied/merged gradient forms included).
    assert fused.stdout.count("qcc.weight_update") == n_quant
    assert "qcc.carry_update" not in fused.stdout


def test_lora_step_ir(model_path):
    _, prog = build(model_path, train.TrainOptions(method="lora", lora_rank=4,
                                                   lora_targets=("attn_q", "ffn_down")))
    fu.filecheck(prog.text, """
CHECK: tensor<4x64xf32> {qcc.name = "blk.0.attn_q.weight.lora_a", qcc.role = "param", qcc.init = "kaiming_uniform", qcc.lora.part = "a", qcc.lora.base = "blk.0.attn_q.weight", qcc.lora.alpha = 1.600000000e+01 : f32}
CHECK: tensor<64x4xf32> {qcc.name = "blk.0.attn_q.weight.lora_b", qcc.role = "param", qcc.init = "zeros", qcc.lora.part = "b"
CHECK: qcc.qmatmul bwd
""")
    assert "qcc.carry_update" not in prog.text
    assert prog.trainable == ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b",
                              "blk.0.ffn_down.weight.lora_a", "blk.0.ffn_down.weight.lora_b"]


OPTIONS = {
    "adamw-bf16": train.TrainOptions(),
    "sgd-f32-carry": train.TrainOptions(optimizer="sgd", carry="f32"),
    "momentum-clipped": train.TrainOptions(optimizer="momentum", ste="clipped",
                                           ste_threshold=0.5),
    "ewgs-jl": train.TrainOptions(ste="ewgs", carry="jl", jl_dim=8, jl_chunk=64),
    "no-carry": train.TrainOptions(carry="none", weight_decay=0.01),
    "lora": train.TrainOptions(method="lora", lora_rank=2),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_options_compile_and_train(tmp_path, model_path, name):
    opts = OPTIONS[name]
    _, prog = build(model_path, opts)
    step = fu.qcc.compile_step(prog.text, tmp_path, "-O0")
    del step
    data = np.frombuffer(open(CORPUS, "rb").read()[:20000], np.uint8).astype(np.int32)
    rng = np.random.default_rng(0)
    s = Session(os.path.join(tmp_path, "step.so"), model_path)
    lr = 0.5 if opts.optimizer == "sgd" else (0.1 if opts.optimizer == "momentum" else 1e-2)
    losses = []
    for i in range(12):
        st = rng.integers(0, len(data) - 17, 4)
        w = np.stack([data[j:j + 17] for j in st])
        s.set_input("tokens", w[:, :-1].copy())
        s.set_input("targets", w[:, 1:].copy())
        s.set_input("lr", np.float32(lr))
        if opts.optimizer == "adamw":
            b1, b2 = optim.adam_bias_corrections(i)
            s.set_input("adam.bc1", np.float32(b1))
            s.set_input("adam.bc2", np.float32(b2))
        s.run()
        losses.append(float(s.result("loss")[0]))
    assert all(np.isfinite(losses))
    assert abs(losses[0] - np.log(256)) < 0.2  # a fresh model guesses uniformly
    assert np.mean(losses[-4:]) < losses[0] - 0.3, losses


def _write_arch(path, arch, tied, bias, qk_norm, rng):
    """A 1-layer model of `arch` in f32 with llama.cpp's tensor names."""
    import gguf
    d, ff, heads, kv, hd, vocab = 32, 64, 4, 2, 8, 256
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in {"context_length": 64, "embedding_length": d,
                 "feed_forward_length": ff, "block_count": 1,
                 "attention.head_count": heads, "attention.head_count_kv": kv}.items():
        w.add_uint32(f"{arch}.{k}", v)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 1000000.0)

    def t(name, *shape, scale=0.05):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))
    t("token_embd.weight", vocab, d)
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    if not tied:
        t("output.weight", vocab, d)
    p = "blk.0."
    w.add_tensor(p + "attn_norm.weight", np.ones(d, np.float32))
    w.add_tensor(p + "ffn_norm.weight", np.ones(d, np.float32))
    t(p + "attn_q.weight", heads * hd, d)
    t(p + "attn_k.weight", kv * hd, d)
    t(p + "attn_v.weight", kv * hd, d)
    t(p + "attn_output.weight", d, heads * hd)
    if bias:
        for n, rows in (("attn_q", heads * hd), ("attn_k", kv * hd), ("attn_v", kv * hd)):
            t(p + n + ".bias", rows)
    if qk_norm:
        w.add_tensor(p + "attn_q_norm.weight", np.ones(hd, np.float32))
        w.add_tensor(p + "attn_k_norm.weight", np.ones(hd, np.float32))
    t(p + "ffn_gate.weight", ff, d)
    t(p + "ffn_up.weight", ff, d)
    t(p + "ffn_down.weight", d, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("arch,tied,bias,qk_norm", [
    ("qwen2", True, True, False), ("qwen3", True, False, True),
    ("mistral", False, False, False)])
def test_architectures_from_metadata(tmp_path, arch, tied, bias, qk_norm):
    """qwen2 (q/k/v biases, NeoX RoPE, tied output), qwen3 (q/k norms) and
    mistral are read from their metadata and train (f32 weights)."""
    path = tmp_path / f"{arch}.gguf"
    _write_arch(path, arch, tied, bias, qk_norm, np.random.default_rng(5))
    cfg, model, info = llama.load(str(path))
    assert cfg.arch == arch and cfg.tied == tied
    assert cfg.qkv_bias == bias and cfg.qk_norm == qk_norm
    assert cfg.rope_mode == ("normal" if arch == "mistral" else "neox")
    assert cfg.rope_theta == 1000000.0 and cfg.n_head_kv == 2
    prog = train.build_train_step(model, 2, 8)
    if bias:
        assert "blk.0.attn_q.bias" in prog.trainable
    if qk_norm:
        assert "blk.0.attn_k_norm.weight" in prog.trainable
    step = fu.qcc.compile_step(prog.text, tmp_path, "-O0")
    del step
    s = Session(os.path.join(tmp_path, "step.so"), str(path))
    tok = np.arange(16, dtype=np.int32).reshape(2, 8) * 7 % 256
    losses = []
    for i in range(8):
        s.set_input("tokens", tok)
        s.set_input("targets", (tok + 1) % 256)
        s.set_input("lr", np.float32(1e-2))
        b1, b2 = optim.adam_bias_corrections(i)
        s.set_input("adam.bc1", np.float32(b1))
        s.set_input("adam.bc2", np.float32(b2))
        s.run()
        losses.append(float(s.result("loss")[0]))
    assert losses[-1] < losses[0] - 0.5, losses


def test_custom_model_example(tmp_path):
    """examples/custom_model.py: a model written in Python (not a llama),
    its weights in a GGUF file, trained through q8_0 blocks."""
    import sys
    root = os.path.dirname(os.path.dirname(CORPUS))
    env = dict(os.environ, QCC_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, os.path.join(root, "examples", "custom_model.py"),
                        str(tmp_path), "--steps", "25", "-O", "0"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    first, final = (float(v) for v in last.split("loss ")[1].split(" -> "))
    assert first > 5.3 and final < 3.6, last
    import gguf
    rd = gguf.GGUFReader(str(tmp_path / "bytes-mlp-q8_0.trained.gguf"))
    assert {t.name: t.tensor_type.name for t in rd.tensors}["up.weight"] == "Q8_0"
