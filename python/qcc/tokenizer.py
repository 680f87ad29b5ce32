"""Tokenizers built from a GGUF file's metadata, giving the same ids as
llama.cpp (`llama_tokenize`) for the vocabulary types qcc supports.

    tok = Tokenizer.from_metadata(info.metadata)
    ids = tok.encode("Hello world")          # BOS first where the model asks
    text = tok.decode(ids)

What is read (all under `tokenizer.ggml.`): `model` ("llama": SentencePiece
BPE over scores; "gpt2": byte-level BPE over merges; "gemma4": BPE over
merges on raw UTF-8 with spaces as U+2581), `pre` (the pre-tokenizer of a
"gpt2" vocabulary), `tokens`, `scores`, `token_type`, `merges`,
`bos_token_id`, `eos_token_id`, `unknown_token_id`, `add_bos_token`,
`add_eos_token`, `add_space_prefix`.

The pipeline is llama.cpp's, step for step:

1. Special tokens are cut out of the text first: user-defined tokens
   always, control and unknown tokens only with `parse_special=True`,
   longest first (llama.cpp's order), honouring llama.cpp's per-model
   lstrip/rstrip attributes.
2. Each remaining fragment is encoded on its own. "llama" vocabularies
   get a leading space where llama.cpp adds one (`add_space_prefix`, at the
   start and after a special token), spaces become U+2581, and the
   fragment is merged by token score; "gpt2" vocabularies are split by the
   pre-tokenizer's regular expressions and byte-encoded, then merged by rank.
3. BOS/EOS are added as the metadata says (`add_special=True`).

The merging itself runs in HF `tokenizers` (Rust), a well-kept library:
its BPE model is exactly ggml's rank-ordered BPE (lowest rank first, ties
leftmost), byte fallback included. A score-ordered SentencePiece vocabulary
becomes the same model by ranking every pair (a, b) whose concatenation is a
token by that token's score, highest first, which is the order llama.cpp's
SPM tokenizer merges in. Splitting on special tokens, the space handling and
decoding are done here, since they are llama.cpp's own rules.
"""

import re

# llama.cpp's token types (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The pre-tokenizer regular expressions of the "gpt2" vocabularies, by
# `tokenizer.ggml.pre` (the names llama.cpp accepts), as the sequence of
# splits llama.cpp applies: each expression splits the pieces the previous
# one left, keeping what it matched as pieces of their own.
_GPT2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
         r"|\s+(?!\S)",)
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
           r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+",)
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
          r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+",)
_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
           r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+"
           r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",)
_STARCODER = (r"\p{N}", _GPT2[0])
# Written with escapes: these ranges must stay byte-exact (an editor's
# Unicode normalization would turn U+1F7D into U+03CE and break them).
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK_LLM = (
    r"[\r\n]",
    r"\s?[A-Za-z" "\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf"
    "\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d"
    "\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5"
    "\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4"
    "\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3"
    "\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d"
    "\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184"
    "\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
    "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+",
    r"\s?[!-/:-~" "\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    r"\s+$",
    _CJK,
    r"\p{N}+",
)
_DEEPSEEK_CODER = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}")
_FALCON = (r"[\p{P}\$\+<=>\^~\|`]+",
           r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
           r"|\s+(?!\S)",
           r"[0-9][0-9][0-9]")
_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
            r"|\s+(?!\S)",
            r"\p{N}+",
            r"[0-9][0-9][0-9]")

# pre name -> (regexes, ignore_merges)
PRE_TOKENIZERS = {
    "default": (_DEFAULT, False),
    "llama3": (_LLAMA3, True), "llama-v3": (_LLAMA3, True),
    "llama-bpe": (_LLAMA3, True), "falcon3": (_LLAMA3, True),
    "pixtral": (_LLAMA3, True), "dbrx": (_LLAMA3, False),
    "smaug-bpe": (_LLAMA3, False),
    "qwen2": (_QWEN2, False), "deepseek-r1-qwen": (_QWEN2, False),
    "stablelm2": (_QWEN2, False),
    "qwen35": (_QWEN35, False),
    "gpt-2": (_GPT2, False), "phi-2": (_GPT2, False), "mpt": (_GPT2, False),
    "olmo": (_GPT2, False),
    "starcoder": (_STARCODER, False), "refact": (_STARCODER, False),
    "command-r": (_STARCODER, False), "smollm": (_STARCODER, False),
    "deepseek-llm": (_DEEPSEEK_LLM, False),
    "deepseek-coder": (_DEEPSEEK_CODER, False),
    "falcon": (_FALCON, False),
}

MODELS = ("llama", "gpt2", "gemma4")


class TokenizerError(Exception):
    """A vocabulary qcc cannot tokenize with: the message says why and what
    is supported."""


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


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SPACE = "\u2581"


class Tokenizer:
    """Text <-> token ids for one GGUF vocabulary (see the module doc)."""

    def __init__(self, meta, name=""):
        kind = meta.get("tokenizer.ggml.model")
        tokens = meta.get("tokenizer.ggml.tokens")
        if kind is None or not tokens:
            raise TokenizerError("the model has no vocabulary "
                                 "(tokenizer.ggml.model / tokenizer.ggml.tokens)")
        if kind not in MODELS:
            raise TokenizerError(f"tokenizer type '{kind}' (tokenizer.ggml.model) "
                                 f"is not supported; qcc supports "
                                 f"{', '.join(MODELS)}")
        self.kind = kind
        self.tokens = [str(t) for t in tokens]
        n = len(self.tokens)
        types = meta.get("tokenizer.ggml.token_type")
        self.types = [int(t) for t in types] if types is not None else [NORMAL] * n
        if len(self.types) != n:
            raise TokenizerError(f"tokenizer.ggml.token_type has {len(self.types)} "
                                 f"entries for {n} tokens")
        self.pre = str(meta.get("tokenizer.ggml.pre", "default") or "default")

        def opt_id(key):
            v = meta.get(f"tokenizer.ggml.{key}")
            return None if v is None or int(v) < 0 or int(v) >= n else int(v)

        self.bos_id = opt_id("bos_token_id")
        self.eos_id = opt_id("eos_token_id")
        self.unk_id = opt_id("unknown_token_id")
        # llama.cpp's defaults per vocabulary type, then the metadata's word.
        spm = kind == "llama"
        add_bos = spm or (kind == "gpt2" and self.pre in ("llama3", "llama-v3",
                                                           "llama-bpe", "falcon3",
                                                           "pixtral"))
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos))
        self.add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", spm))
        if kind != "llama":
            self.add_space_prefix = False
        self.escape_spaces = kind in ("llama", "gemma4")
        self.byte_encode = kind == "gpt2"
        # Text -> id, the last of equal texts winning as in llama.cpp.
        self.index = {}
        for i, t in enumerate(self.tokens):
            self.index[t] = i
        self._special = self._special_tokens(name.lower(), meta)
        self._hf = self._build(meta)
        self._pieces = None

    @classmethod
    def from_metadata(cls, meta):
        return cls(meta, str(meta.get("general.name", "")))

    @classmethod
    def from_gguf(cls, path):
        from .models.llama import read_gguf
        return cls.from_metadata(read_gguf(path).metadata)

    def __len__(self):
        return len(self.tokens)

    # -- special tokens ----------------------------------------------------

    def _special_tokens(self, name, meta):
        """(text, id, is_control_or_unknown, lstrip, rstrip), longest first."""
        arch = str(meta.get("general.architecture", ""))
        specials = []
        for i, (t, ty) in enumerate(zip(self.tokens, self.types)):
            if ty in (CONTROL, USER_DEFINED, UNKNOWN) and t:
                specials.append([t, i, ty != USER_DEFINED, False, False])
        if any(s in self.pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) \
                or arch in ("nomic-bert-moe", "jina-bert-v3"):
            for s in specials:
                if s[0] == "<mask>":
                    s[3] = True
        elif "phi-3" in name or "phi3" in name:
            for s in specials:
                s[4] = s[0] not in ("<unk>", "<s>", "<|endoftext|>")
        specials.sort(key=lambda s: -len(s[0].encode()))
        return [tuple(s) for s in specials]

    def _occurring(self, text, parse_special):
        """The special tokens that occur in `text`, in llama.cpp's order.
        Found per first character: at each position where a special token's
        first character occurs, the token texts of each length are looked up
        (a few positions instead of one search of the text per token); for a
        common first character each token is searched for instead."""
        by_first = self._by_first_char(parse_special)
        found = set()
        for ch, (lengths, texts) in by_first.items():
            hits = text.count(ch)
            if hits * len(lengths) > 64 * len(texts):
                # A common first character: search each token instead.
                found.update(t for t in texts if t in text)
                continue
            p = text.find(ch) if hits else -1
            while p >= 0:
                for n in lengths:
                    if text[p:p + n] in texts:
                        found.add(text[p:p + n])
                p = text.find(ch, p + 1)
        return [s for s in self._special
                if s[0] in found and (parse_special or not s[2])]

    def _by_first_char(self, parse_special):
        key = bool(parse_special)
        cache = self.__dict__.setdefault("_first_char_cache", {})
        if key not in cache:
            groups = {}
            for s in self._special:
                if parse_special or not s[2]:
                    lengths, texts = groups.setdefault(s[0][0], (set(), set()))
                    lengths.add(len(s[0]))
                    texts.add(s[0])
            cache[key] = {c: (sorted(l, reverse=True), t)
                          for c, (l, t) in groups.items()}
        return cache[key]

    def _partition(self, text, parse_special):
        """llama.cpp's split of `text` at special tokens: a list of str
        (text to encode) and int (a token id). Tokens are cut longest
        first, each from every fragment left by the ones before it."""
        frags = [text]
        for tok_text, tok_id, _, lstrip, rstrip in self._occurring(text, parse_special):
            out = []
            for f in frags:
                if not isinstance(f, str) or tok_text not in f:
                    out.append(f)
                    continue
                parts = f.split(tok_text)
                for k, p in enumerate(parts):
                    if k > 0:
                        out.append(tok_id)
                    if lstrip and k + 1 < len(parts):
                        p = p.rstrip(" \t\n\r\f\v")
                    if rstrip and k > 0:
                        p = p.lstrip(" \t\n\r\f\v")
                    if p:
                        out.append(p)
            frags = out
        return frags

    # -- the BPE model -----------------------------------------------------

    def _build(self, meta):
        try:
            from tokenizers import Regex, Tokenizer as HFTokenizer
            from tokenizers import models, pre_tokenizers
        except ImportError:  # pragma: no cover - installed by scripts/setup
            raise TokenizerError("the Python package 'tokenizers' is missing; "
                                 "run scripts/setup") from None
        vocab = dict(self.index)
        if self.kind == "llama":
            merges = self._merges_from_scores(meta)
            model = models.BPE(vocab=vocab, merges=merges, byte_fallback=True,
                               fuse_unk=False)
            hf = HFTokenizer(model)
        else:
            raw = meta.get("tokenizer.ggml.merges")
            if not raw:
                raise TokenizerError("a BPE vocabulary without "
                                     "tokenizer.ggml.merges")
            merges = []
            for m in raw:
                m = str(m)
                pos = m.find(" ", 1)
                if pos < 0:
                    raise TokenizerError(f"malformed merge {m!r} in "
                                         "tokenizer.ggml.merges")
                merges.append((m[:pos], m[pos + 1:]))
            if self.kind == "gpt2":
                if self.pre not in PRE_TOKENIZERS:
                    raise TokenizerError(
                        f"pre-tokenizer '{self.pre}' (tokenizer.ggml.pre) is not "
                        f"supported; qcc supports {', '.join(sorted(PRE_TOKENIZERS))}")
                regexes, ignore_merges = PRE_TOKENIZERS[self.pre]
                model = models.BPE(vocab=vocab, merges=merges,
                                   ignore_merges=ignore_merges)
                hf = HFTokenizer(model)
                hf.pre_tokenizer = pre_tokenizers.Sequence(
                    [pre_tokenizers.Split(Regex(r), behavior="isolated")
                     for r in regexes]
                    + [pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                use_regex=False)])
            else:  # gemma4: whole lines, no byte encoding
                model = models.BPE(vocab=vocab, merges=merges, byte_fallback=True,
                                   fuse_unk=False)
                hf = HFTokenizer(model)
                hf.pre_tokenizer = pre_tokenizers.Split(
                    Regex(r"[^\n]+|[\n]+"), behavior="isolated")
        return hf

    def _merges_from_scores(self, meta):
        """Every pair (a, b) of tokens whose concatenation is a token,
        ordered by that token's score, highest first (SentencePiece's BPE)."""
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None:
            raise TokenizerError("a SentencePiece vocabulary without "
                                 "tokenizer.ggml.scores")
        scores = [float(s) for s in scores]
        index = self.index
        cand = []
        for t, i in index.items():
            if len(t) < 2 or self.types[i] == BYTE:
                continue
            s = scores[i]
            for k in range(1, len(t)):
                a, b = t[:k], t[k:]
                if a in index and b in index:
                    cand.append((-s, i, k, a, b))
        cand.sort()
        return [(a, b) for _, _, _, a, b in cand]

    # -- encode / decode ---------------------------------------------------

    def _prepare(self, frags):
        """The strings the BPE model sees, one per text fragment."""
        out = []
        prev_special = True
        for f in frags:
            if isinstance(f, int):
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                f = " " + f
            prev_special = False
            if self.escape_spaces:
                f = f.replace(" ", _SPACE)
            out.append(f)
        return out

    def describe(self):
        """A few words for logs: 'llama tokenizer, 262,144 tokens'."""
        return f"{self.kind} tokenizer, {len(self.tokens):,} tokens"

    def encode(self, text, add_special=True, parse_special=False):
        """Token ids of `text` (str), as llama_tokenize gives them."""
        frags = self._partition(text, parse_special) if text else []
        pieces = self._prepare(frags)
        encoded = self._hf.encode_batch(pieces, add_special_tokens=False) \
            if pieces else []
        ids = []
        if add_special and self.add_bos and self.bos_id is not None:
            ids.append(self.bos_id)
        k = 0
        for f in frags:
            if isinstance(f, int):
                ids.append(f)
            else:
                ids.extend(encoded[k].ids)
                k += 1
        if add_special and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def piece(self, i, special=False):
        """The bytes token `i` stands for (llama.cpp's token_to_piece)."""
        if self._pieces is None:
            self._pieces = [None] * len(self.tokens)
        p = self._pieces[i] if not special else None
        if p is not None:
            return p
        t, ty = self.tokens[i], self.types[i]
        if ty in (CONTROL, UNKNOWN, UNUSED) and not special:
            p = b""
        elif ty == USER_DEFINED or ty in (CONTROL, UNKNOWN, UNUSED):
            p = t.encode()
        elif ty == BYTE or (self.kind != "gpt2" and _BYTE_TOKEN.fullmatch(t)):
            m = _BYTE_TOKEN.fullmatch(t)
            p = bytes([int(m.group(1), 16)]) if m else t.encode()
        elif self.byte_encode:
            inv = _byte_decoder()
            p = bytes(inv[c] for c in t if c in inv)
        else:
            p = t.replace(_SPACE, " ").encode()
        if not special:
            self._pieces[i] = p
        return p

    def decode_bytes(self, ids, special=False):
        out = bytearray()
        for n, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise TokenizerError(f"token id {i} is outside the vocabulary "
                                     f"(0..{len(self.tokens) - 1})")
            p = self.piece(i, special)
            if n == 0 and self.add_space_prefix and p.startswith(b" "):
                p = p[1:]
            out += p
        return bytes(out)

    def decode(self, ids, special=False):
        """Text of `ids`; invalid UTF-8 (a split character) shows as U+FFFD."""
        return self.decode_bytes(ids, special).decode("utf-8", errors="replace")


_BYTE_DECODER = None


def _byte_decoder():
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        _BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}
    return _BYTE_DECODER


class ByteTokenizer:
    """One token per byte, for vocabularies with a token for every byte and
    for the byte-level demo model (kept for qcc-train's byte mode)."""

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

    def describe(self):
        return "byte-level tokens"

    def encode(self, data):
        import numpy as np
        lut = np.asarray(self.byte_to_id, dtype=np.int32)
        return lut[np.frombuffer(bytes(data), dtype=np.uint8)]

    def decode(self, ids):
        return bytes(self.id_to_byte.get(int(i), ord("?")) for i in ids)


def for_model(meta, vocab):
    """The tokenizer of a model's GGUF metadata: its own (Tokenizer) when it
    is complete; byte-level ids (ByteTokenizer) for a model with a byte
    vocabulary and nothing else (qcc's synthetic demo models: no tokens,
    or byte tokens without BPE merges)."""
    if not meta.get("tokenizer.ggml.tokens"):
        return ByteTokenizer.from_metadata(meta, vocab)
    try:
        return Tokenizer.from_metadata(meta)
    except TokenizerError as e:
        try:
            return ByteTokenizer.from_metadata(meta, vocab)
        except TokenizerError:
            raise e from None
