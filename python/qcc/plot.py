"""A loss curve as a PNG, with no plotting library: a small raster, lines
drawn by hand, a 5x7 bitmap font for the labels, and zlib for the PNG
encoding (the format needs nothing else)."""

import math
import struct
import zlib

# 5x7 glyphs, one string of 7 rows of 5 bits per character.
_FONT = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "b": "10000 10000 10110 11001 10001 10001 11110",
    "c": "00000 00000 01110 10000 10000 10001 01110",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "f": "00110 01001 01000 11100 01000 01000 01000",
    "g": "00000 00000 01111 10001 01111 00001 11110",
    "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110",
    "k": "10000 10000 10010 10100 11000 10100 10010",
    "l": "01100 00100 00100 00100 00100 00100 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "p": "00000 00000 11110 10001 11110 10000 10000",
    "q": "00000 00000 01101 10011 01111 00001 00001",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101",
    "v": "00000 00000 10001 10001 10001 01010 00100",
    "w": "00000 00000 10001 10001 10101 10101 01010",
    "x": "00000 00000 10001 01010 00100 01010 10001",
    "y": "00000 10001 10001 01111 00001 10001 01110",
    "z": "00000 00000 11111 00010 00100 01000 11111",
    "_": "00000 00000 00000 00000 00000 00000 11111",
}


class Canvas:
    def __init__(self, w, h, bg=(255, 255, 255)):
        self.w, self.h = w, h
        self.px = bytearray(bytes(bg) * (w * h))

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i:i + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, width=1):
        x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for ox in range(width):
                for oy in range(width):
                    self.set(x0 + ox, y0 + oy, c)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x, y, s, c=(0, 0, 0), scale=1):
        for ch in s:
            g = _FONT.get(ch, _FONT.get(ch.lower(), _FONT[" "])).split()
            for row, bits in enumerate(g):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        for a in range(scale):
                            for b in range(scale):
                                self.set(x + col * scale + a, y + row * scale + b, c)
            x += 6 * scale

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[3 * self.w * y:3 * self.w * (y + 1)])
                       for y in range(self.h))

        def chunk(kind, data):
            return (struct.pack(">I", len(data)) + kind + data +
                    struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
        return (b"\x89PNG\r\n\x1a\n" +
                chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _ticks(lo, hi, n=5):
    span = hi - lo
    if span <= 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + 1e-12:
        out.append(v)
        v += step
    return out


def _fmt(v):
    if abs(v) >= 1000 or v == int(v):
        return f"{int(round(v))}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def loss_curve_png(path, steps, losses, title="loss",
                   target=None, width=720, height=420):
    """Writes the curve of `losses` over `steps` (raw in light grey, a
    trailing mean in blue; an optional dashed `target` line)."""
    c = Canvas(width, height)
    left, right, top, bottom = 62, 16, 34, 40
    pw, ph = width - left - right, height - top - bottom
    xs = list(steps)
    ys = [float(v) for v in losses]
    if not xs:
        xs, ys = [0], [0.0]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    finite = [v for v in ys if math.isfinite(v)] or [0.0]
    y0, y1 = min(finite + ([target] if target else [])), max(finite)
    pad = 0.05 * (y1 - y0 or 1.0)
    y0, y1 = y0 - pad, y1 + pad

    def X(v):
        return left + (v - x0) / (x1 - x0) * pw

    def Y(v):
        return top + (y1 - v) / (y1 - y0) * ph

    grid, axis = (228, 228, 228), (60, 60, 60)
    for t in _ticks(y0, y1):
        c.line(left, Y(t), left + pw, Y(t), grid)
        label = _fmt(t)
        c.text(left - 8 - 6 * len(label), int(Y(t)) - 3, label)
    for t in _ticks(x0, x1):
        c.line(X(t), top, X(t), top + ph, grid)
        label = _fmt(t)
        c.text(int(X(t)) - 3 * len(label), top + ph + 8, label)
    c.line(left, top, left, top + ph, axis)
    c.line(left, top + ph, left + pw, top + ph, axis)
    if target is not None:
        for k in range(0, pw, 8):
            c.line(left + k, Y(target), left + min(k + 4, pw), Y(target), (200, 60, 60))
        c.text(left + pw - 6 * len(f"target {_fmt(target)}") - 2, int(Y(target)) - 10,
               f"target {_fmt(target)}", (200, 60, 60))
    pts = [(a, b) for a, b in zip(xs, ys) if math.isfinite(b)]
    for (a0, b0), (a1, b1) in zip(pts, pts[1:]):
        c.line(X(a0), Y(b0), X(a1), Y(b1), (185, 185, 185))
    # A trailing mean over ~5% of the run (at most 25 points) shows the trend
    # through the noise of single batches without lagging at the start.
    win = max(1, min(25, len(pts) // 20))
    sm = []
    for i, (a, _) in enumerate(pts):
        chunk = [b for _, b in pts[max(0, i - win + 1):i + 1]]
        sm.append((a, sum(chunk) / len(chunk)))
    for (a0, b0), (a1, b1) in zip(sm, sm[1:]):
        c.line(X(a0), Y(b0), X(a1), Y(b1), (30, 90, 200), width=2)
    c.text(left, 12, title, scale=1)
    c.text(left + pw // 2 - 12, height - 16, "step")
    with open(path, "wb") as f:
        f.write(c.png())
