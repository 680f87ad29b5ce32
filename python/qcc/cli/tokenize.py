"""qcc-tokenize: the token ids of a text under a GGUF model's tokenizer,
the same as llama.cpp's `llama-tokenize`.

    qcc-tokenize --model M.gguf (--file F | --prompt TEXT | --stdin)
                 [--ids] [--no-bos] [--no-parse-special] [--show-count]

`--ids` prints `[2, 156, ...]` like `llama-tokenize --ids`; without it,
one `id -> 'piece'` line per token. Like llama-tokenize, special tokens
in the text are parsed unless --no-parse-special, and BOS/EOS are added as
the model's metadata says unless --no-bos. Exit status: 0, 1 for an error
(one line `qcc-tokenize: error: ...`), 2 for a usage error."""

import argparse
import sys

from ..models.llama import ModelError, read_gguf
from ..tokenizer import Tokenizer, TokenizerError


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="qcc-tokenize",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", required=True, help="GGUF model (its vocabulary)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", "-f", help="UTF-8 text file to tokenize")
    src.add_argument("--prompt", "-p", help="text to tokenize")
    src.add_argument("--stdin", action="store_true", help="read the text from stdin")
    ap.add_argument("--ids", action="store_true",
                    help="print only the ids, as a list: [2, 156, ...]")
    ap.add_argument("--no-bos", action="store_true",
                    help="add no BOS/EOS even where the model asks for them")
    ap.add_argument("--no-parse-special", action="store_true",
                    help="treat special-token text in the input as plain text")
    ap.add_argument("--show-count", action="store_true",
                    help="also print the number of tokens")
    return ap.parse_args(argv)


def read_text(a):
    try:
        if a.prompt is not None:
            return a.prompt
        if a.stdin:
            data = sys.stdin.buffer.read()
            where = "stdin"
        else:
            with open(a.file, "rb") as f:
                data = f.read()
            where = a.file
    except OSError as e:
        raise TokenizerError(f"{a.file}: cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{where}: not UTF-8 text (byte {e.start})") from None


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        text = read_text(a)
        info = read_gguf(a.model)
        tok = Tokenizer.from_metadata(info.metadata)
        ids = tok.encode(text, add_special=not a.no_bos,
                         parse_special=not a.no_parse_special)
    except (ModelError, TokenizerError) as e:
        msg = str(e)
        if isinstance(e, TokenizerError):
            msg = f"{a.model}: {msg}" if not msg.startswith(a.model) else msg
        print(f"qcc-tokenize: error: {msg}", file=sys.stderr)
        return 1
    out = sys.stdout
    if a.ids:
        out.write("[" + ", ".join(map(str, ids)) + "]\n")
    else:
        for i in ids:
            piece = tok.piece(i, special=True).decode("utf-8", "replace")
            out.write(f"{i:6d} -> '{piece}'\n")
    if a.show_count:
        out.write(f"Total number of tokens: {len(ids)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
