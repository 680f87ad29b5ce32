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


GEMM_CHOICES = ("auto", "f32", "bf16")


def cpu_flags():
    """The CPU feature flags of /proc/cpuinfo's first processor (empty
    where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def gemm_flags(choice):
    """qcc's flags for `--gemm CHOICE`: bf16 rounds the micro-GEMM's
    operands to bf16 (`qcc --gemm-bf16`); auto takes it where the CPU has
    AVX512-BF16 (two products per lane per instruction), f32 otherwise."""
    if choice == "auto":
        choice = "bf16" if "avx512_bf16" in cpu_flags() else "f32"
    return ["--gemm-bf16"] if choice == "bf16" else []


def check_chunk_args(ap, a, min_ctx):
    """The checks of --ctx, --batch, --threads and --chunks that
    qcc-perplexity and qcc-imatrix share (usage errors, exit 2)."""
    if a.ctx < min_ctx:
        ap.error(f"--ctx must be at least {min_ctx}")
    if a.batch <= 0:
        ap.error("--batch must be a positive integer")
    if a.threads < 0:
        ap.error("--threads must be 0 (all cores) or positive")
    if a.chunks == 0 or a.chunks < -1:
        ap.error("--chunks must be a positive integer")
