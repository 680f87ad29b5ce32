"""Models built from GGUF metadata."""
