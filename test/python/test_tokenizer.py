"""qcc.tokenizer against llama.cpp: the tokenizer fixtures that llama.cpp
ships (models/ggml-vocab-*.gguf with .inp/.out, made by the models' own HF
tokenizers and checked by llama.cpp's test-tokenizer-0), and llama-tokenize
itself on real text with the Gemma 3 model. Ids must be equal, not close."""

import ast
import os
import subprocess
import sys

import pytest

from assets import VOCAB_FIXTURES, gemma3, require, run_llama
from qcc_step import ROOT  # puts the source tree's python/ first

from qcc.models.llama import read_gguf
from qcc.tokenizer import Tokenizer, TokenizerError

# Every vocabulary type qcc supports that llama.cpp has fixtures for.
FIXTURES = ["llama-spm", "phi-3", "gemma-4", "llama-bpe", "qwen2", "qwen35",
            "gpt-2", "deepseek-llm", "deepseek-coder", "starcoder", "command-r",
            "falcon", "mpt", "refact"]
SEP = "\n__ggml_vocab_test__\n"


def read_fixture(name):
    """(texts, expected ids) split as llama.cpp's test-tokenizer-0 does."""
    base = require(os.path.join(VOCAB_FIXTURES, f"ggml-vocab-{name}.gguf"))
    with open(base + ".inp", encoding="utf-8", newline="") as f:
        raw = f.read()
    texts, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    with open(base + ".out", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # getline's view: the final newline ends the last line
    outs = [[int(x) for x in line.split()] for line in lines]
    return base, texts, outs


@pytest.mark.parametrize("name", FIXTURES)
def test_llama_cpp_fixture(name):
    base, texts, outs = read_fixture(name)
    assert len(texts) == len(outs), (len(texts), len(outs))
    assert len(texts) >= 40
    tok = Tokenizer.from_metadata(read_gguf(base).metadata)
    bad = []
    for text, want in zip(texts, outs):
        got = tok.encode(text, add_special=False, parse_special=False)
        if got != want:
            bad.append((text[:50], want[:12], got[:12]))
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


@pytest.fixture(scope="module")
def gemma_tok():
    return Tokenizer.from_metadata(read_gguf(gemma3()).metadata)


REAL_TEXTS = {
    "english": os.path.join(ROOT, "data", "devils-dictionary.txt"),
}
MIXED = ("Ünïcödé café — naïve 日本語のテキスト, 한국어, emoji 🦙🦙 and\ttabs\n\n\n"
         "    indented code: def f(x):\n        return x**2  # <b>bold</b>\n"
         "<start_of_turn>user\nHi<end_of_turn>\n<bos> [multimodal] \r\n end  ")


def llama_ids(model, path, *flags):
    return ast.literal_eval(run_llama("llama-tokenize", "-m", model, "-f", path,
                                      "--ids", "--log-disable", *flags).strip())


@pytest.mark.parametrize("parse_special", [True, False])
@pytest.mark.parametrize("which", ["english", "mixed"])
def test_gemma3_equals_llama_tokenize(gemma_tok, tmp_path, which, parse_special):
    if which == "mixed":
        path = tmp_path / "mixed.txt"
        path.write_text(MIXED * 3, encoding="utf-8")
    else:
        path = REAL_TEXTS[which]
    text = open(path, encoding="utf-8", newline="").read()
    flags = () if parse_special else ("--no-parse-special",)
    want = llama_ids(gemma3(), path, *flags)
    got = gemma_tok.encode(text, add_special=True, parse_special=parse_special)
    assert got[0] == gemma_tok.bos_id
    assert got == want


def test_gemma3_decode_round_trip(gemma_tok):
    text = open(REAL_TEXTS["english"], encoding="utf-8").read()[:20000] + MIXED
    ids = gemma_tok.encode(text, add_special=False, parse_special=True)
    assert gemma_tok.decode(ids, special=True) == text
    # Control tokens print as nothing unless asked for, like llama.cpp.
    assert gemma_tok.decode([gemma_tok.bos_id]) == ""
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        gemma_tok.decode([len(gemma_tok)])


def test_unsupported_vocabulary_is_one_line():
    base = require(os.path.join(VOCAB_FIXTURES, "ggml-vocab-bert-bge.gguf"))
    with pytest.raises(TokenizerError) as e:
        Tokenizer.from_metadata(read_gguf(base).metadata)
    assert "'bert'" in str(e.value) and "llama, gpt2, gemma4" in str(e.value)


def _cli(*args, stdin=None):
    return subprocess.run([os.path.join(ROOT, "scripts", "qcc-tokenize"), *args],
                          capture_output=True, text=True, input=stdin, timeout=300)


def test_qcc_tokenize_prints_llama_tokenize_form(tmp_path):
    prompt = "Hello <start_of_turn>world, naïve 🦙"
    p = _cli("--model", gemma3(), "--prompt", prompt, "--ids")
    assert p.returncode == 0, p.stderr
    want = run_llama("llama-tokenize", "-m", gemma3(), "-p", prompt, "--ids",
                     "--log-disable")
    assert p.stdout.strip() == want.strip()
    f = tmp_path / "in.txt"
    f.write_text(prompt, encoding="utf-8")
    p2 = _cli("--model", gemma3(), "--file", str(f), "--ids", "--no-bos")
    assert p2.stdout.strip() == "[" + want.strip()[len("[2, "):]


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such.gguf", "--prompt", "x"], "/no/such.gguf: no such file"),
    (["--model", "GEMMA", "--file", "/no/such.txt"], "/no/such.txt: cannot read"),
    (["--model", "BERT", "--prompt", "x"], "tokenizer type 'bert'"),
])
def test_qcc_tokenize_bad_input(args, message):
    args = [gemma3() if a == "GEMMA" else
            os.path.join(VOCAB_FIXTURES, "ggml-vocab-bert-bge.gguf") if a == "BERT"
            else a for a in args]
    p = _cli(*args)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcc-tokenize: error:")
    assert message in lines[0]
    assert "Traceback" not in p.stderr


def test_qcc_tokenize_usage_error():
    p = _cli("--prompt", "x")
    assert p.returncode == 2 and "--model" in p.stderr
