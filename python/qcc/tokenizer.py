"""Byte-level tokenization against a GGUF model's vocabulary.

Every byte of the text is one token. Which token id stands for byte b
depends on the vocabulary the model was built with:

- GPT-2-style byte-level BPE ("gpt2": Qwen2/3, the demo model): the token
  whose text is GPT-2's printable stand-in for the byte (bytes_to_unicode);
- SentencePiece with byte fallback ("llama"): the token "<0xNN>";
- no vocabulary in the file and at least 256 rows: token id = byte value.

A model whose vocabulary lacks a token for some byte is refused, naming the
byte."""


def bytes_to_unicode():
    """GPT-2's reversible map of the 256 byte values to printable chars."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class TokenizerError(Exception):
    pass


class ByteTokenizer:
    def __init__(self, byte_to_id, vocab):
        self.byte_to_id = list(byte_to_id)
        self.vocab = vocab
        self.id_to_byte = {t: b for b, t in enumerate(self.byte_to_id)}

    @classmethod
    def from_metadata(cls, meta, vocab):
        tokens = meta.get("tokenizer.ggml.tokens")
        kind = meta.get("tokenizer.ggml.model")
        if not tokens:
            if vocab < 256:
                raise TokenizerError(f"the model has {vocab} tokens and no "
                                     "vocabulary; byte-level text needs 256")
            return cls(range(256), vocab)
        index = {t: i for i, t in enumerate(tokens)}
        if kind == "llama":
            names = [f"<0x{b:02X}>" for b in range(256)]
        else:
            m = bytes_to_unicode()
            names = [m[b] for b in range(256)]
        ids = []
        for b, name in enumerate(names):
            if name not in index:
                raise TokenizerError(
                    f"the model's vocabulary (tokenizer.ggml.model = {kind!r}) "
                    f"has no token for byte 0x{b:02X} ({name!r}); qcc-train "
                    "tokenizes text byte by byte")
            ids.append(index[name])
        return cls(ids, vocab)

    def encode(self, data):
        import numpy as np
        lut = np.asarray(self.byte_to_id, dtype=np.int32)
        return lut[np.frombuffer(bytes(data), dtype=np.uint8)]

    def decode(self, ids):
        return bytes(self.id_to_byte.get(int(i), ord("?")) for i in ids)
