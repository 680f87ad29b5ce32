"""Training and validation text for qcc-train: documents in, token windows
out.

    docs = read_documents("train.jsonl")     # or a plain .txt file
    stream = pack(docs, tokenizer)           # i32 ids, BOS before each document
    x, y = windows_at(stream, step, batch, seq, seed, bos)

A plain text file is one document; a `.jsonl` file holds one JSON object
per line with the document under "text" (blank lines skipped). Documents
are tokenized with the model's tokenizer (BOS first when the model adds
it) and packed end to end into one stream. A training window is a random
span of seq + 1 tokens of that stream (the same for a given seed and step,
resumed or not); its first input token is replaced by BOS, as
llama-perplexity does with every chunk it scores, so that the model is
trained in the position it is evaluated in. Errors raise DataError with
one line naming the file (and line)."""

import json

import numpy as np


class DataError(Exception):
    pass


def read_text(path):
    """The whole file as text; DataError (one line) when it cannot be read
    or is not UTF-8."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_documents(path):
    text = read_text(path)
    if not path.endswith(".jsonl"):
        return [text] if text else []
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f'{path}:{n}: expected an object with a "text" string')
        docs.append(obj["text"])
    return docs


def pack(docs, tokenizer):
    """The documents' ids end to end (i32). `tokenizer` is a
    qcc.tokenizer.Tokenizer (special tokens as the model adds them) or a
    ByteTokenizer (the bytes of each document)."""
    parts = []
    for d in docs:
        if hasattr(tokenizer, "add_bos"):
            parts.append(np.asarray(tokenizer.encode(d, add_special=True), np.int32))
        else:
            parts.append(np.asarray(tokenizer.encode(d.encode("utf-8")), np.int32))
    if not parts:
        return np.zeros(0, np.int32)
    return np.concatenate(parts).astype(np.int32)


def split(stream, fraction):
    """(train, validation): the last `fraction` of the stream validates."""
    n = int(round(len(stream) * fraction))
    return stream[:len(stream) - n], stream[len(stream) - n:]


def windows_at(stream, step, batch, seq, seed, bos=None):
    """Inputs and targets [batch, seq] of one training step."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seq - 1, batch)
    w = stream[starts[:, None] + np.arange(seq + 1)[None, :]]
    x = np.ascontiguousarray(w[:, :-1])
    if bos is not None:
        x[:, 0] = bos
    return x, np.ascontiguousarray(w[:, 1:])


def eval_windows(stream, seq, limit_tokens=None, bos=None):
    """Consecutive, non-overlapping windows of the stream as (x, y)
    [n, seq], at most `limit_tokens` targets in all."""
    n = (len(stream) - 1) // seq
    if limit_tokens:
        n = min(n, max(1, limit_tokens // seq))
    idx = np.arange(n)[:, None] * seq + np.arange(seq + 1)[None, :]
    w = stream[idx]
    x = np.ascontiguousarray(w[:, :-1])
    if bos is not None and n:
        x[:, 0] = bos
    return x, np.ascontiguousarray(w[:, 1:])
