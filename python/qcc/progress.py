"""A progress display for training loops: a bar redrawn in place on a
terminal, one line every few steps otherwise (logs, CI)."""

import sys
import time


def fmt_duration(s):
    s = int(round(max(0.0, s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    def __init__(self, total, start=0, tokens_per_step=0, stream=None,
                 width=24, lines=20):
        self.total, self.start = total, start
        self.tokens_per_step = tokens_per_step
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.every = max(1, (total - start) // lines)
        self.t0 = time.monotonic()
        self.ema = None
        self.last_len = 0

    def rate(self, done):
        el = time.monotonic() - self.t0
        return (done / el if el > 0 else 0.0), el

    def update(self, step, loss, note=""):
        """After step `step` (1-based) with `loss`."""
        if loss == loss:  # not NaN
            self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        done = step - self.start
        sps, el = self.rate(done)
        eta = (self.total - step) / sps if sps > 0 else 0.0
        toks = sps * self.tokens_per_step
        frac = step / self.total if self.total else 1.0
        ema = f" (avg {self.ema:.4f})" if self.ema is not None else ""
        text = (f"step {step}/{self.total}  loss {loss:.4f}{ema}  "
                f"{toks:,.0f} tokens/s  ETA {fmt_duration(eta)}{note}")
        if self.tty:
            fill = int(round(frac * self.width))
            bar = "[" + "#" * fill + "-" * (self.width - fill) + "]"
            line = f"\r{bar} {text}"
            pad = max(0, self.last_len - len(line))
            self.stream.write(line + " " * pad)
            self.stream.flush()
            self.last_len = len(line)
        elif done % self.every == 0 or step == self.total or done == 1:
            self.stream.write(text + "\n")
            self.stream.flush()

    def message(self, text):
        """A line that does not disturb the bar."""
        if self.tty and self.last_len:
            self.stream.write("\r" + " " * self.last_len + "\r")
            self.last_len = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and self.last_len:
            self.stream.write("\n")
            self.stream.flush()
            self.last_len = 0
