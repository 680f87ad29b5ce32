"""The progress display of training loops: a tqdm bar on a terminal (steps,
loss and its running mean, tokens/s, ETA), one plain line every few steps
otherwise (logs, CI), where a redrawn bar would be noise."""

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
    def __init__(self, total, start=0, tokens_per_step=0, stream=None, lines=20):
        self.start = start
        self.tokens_per_step = tokens_per_step
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lines = lines
        self._total = total
        self.t0 = time.monotonic()
        self.ema = None
        self.bar = None
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step",
                            file=self.stream, dynamic_ncols=True, leave=True)

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, value):
        self._total = value
        if self.bar is not None:
            self.bar.total = value
            self.bar.refresh()

    def update(self, step, loss, note=""):
        """After step `step` (1-based) with `loss`."""
        if loss == loss:  # not NaN
            self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        done = step - self.start
        el = time.monotonic() - self.t0
        toks = done * self.tokens_per_step / el if el > 0 else 0.0
        if self.bar is not None:
            post = {"loss": f"{loss:.4f}", "tok/s": f"{toks:,.0f}"}
            if self.ema is not None:
                post["avg"] = f"{self.ema:.4f}"
            if note:
                post["note"] = note.strip()
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        every = max(1, (self._total - self.start) // self.lines)
        if done % every == 0 or step == self._total or done == 1:
            eta = (self._total - step) * el / done if done else 0.0
            ema = f" (avg {self.ema:.4f})" if self.ema is not None else ""
            self.stream.write(f"step {step}/{self._total}  loss {loss:.4f}{ema}  "
                              f"{toks:,.0f} tokens/s  ETA {fmt_duration(eta)}"
                              f"{note}\n")
            self.stream.flush()

    def message(self, text):
        """A line that does not disturb the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
