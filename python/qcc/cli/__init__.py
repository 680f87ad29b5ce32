"""Command-line tools: qcc-train, qcc-perplexity, qcc-generate, qcc-tokenize."""

import ctypes


def release_memory():
    """Collects garbage and hands the heap's free memory back to the
    kernel (glibc's malloc_trim), so that freed Python objects do not stay
    in the process's resident set."""
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
