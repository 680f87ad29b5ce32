#!/usr/bin/env python3
"""Runs a verifier over the malformed corpus and checks every verdict.

usage: run_corpus.py VERIFY_CMD CORPUS_DIR
VERIFY_CMD is e.g. "build/bin/qcc-gguf verify" or the sanitizer driver. For
each row of expected.tsv: valid files must exit 0; malformed ones must exit
1 (never a signal, never a sanitizer report) with exactly one stderr line
naming `rule <id>:` and the expected context.
"""

import os
import shlex
import subprocess
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cmd = shlex.split(sys.argv[1])
    corpus = sys.argv[2]
    failures = 0
    count = 0
    with open(os.path.join(corpus, "expected.tsv")) as manifest:
        for line in manifest:
            if line.startswith("#") or not line.strip():
                continue
            name, expected, context = (line.rstrip("\n").split("\t") + [""])[:3]
            count += 1
            proc = subprocess.run(cmd + [os.path.join(corpus, name)],
                                  capture_output=True, text=True,
                                  errors="replace")
            err_lines = proc.stderr.splitlines()
            problem = None
            if proc.returncode < 0:
                problem = "killed by signal %d" % -proc.returncode
            elif expected == "OK":
                if proc.returncode != 0:
                    problem = "exit %d, expected 0" % proc.returncode
            elif proc.returncode != 1:
                problem = "exit %d, expected 1" % proc.returncode
            elif len(err_lines) != 1:
                problem = "%d stderr lines, expected 1" % len(err_lines)
            elif "rule %s:" % expected not in err_lines[0]:
                problem = "does not name rule %s" % expected
            elif context not in err_lines[0]:
                problem = "does not mention %r" % context
            if problem:
                failures += 1
                print("FAIL %s: %s\n  stderr: %s" % (name, problem,
                                                      proc.stderr.strip()))
    print("%d files, %d failures" % (count, failures))
    sys.exit(1 if failures or count < 40 else 0)


if __name__ == "__main__":
    main()
