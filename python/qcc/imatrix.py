"""Importance matrices: the per-input-column sum of squared activations that
reach each matrix of a model, from qcc's compiled forward pass, in
llama.cpp's imatrix GGUF layout (what `llama-imatrix` writes and
`llama-quantize --imatrix` / `qcc-gguf quantize --imatrix` read).

    step = build_linear_input_stats(model, batch, ctx)   # MLIR text
    stats = ImatrixStats(names)                           # accumulate runs
    write(path, stats, datasets=[...], chunk_size=ctx)

The protocol is llama-imatrix's: the text is tokenized with BOS and cut
into chunks of `ctx` tokens, each chunk's first token replaced by BOS;
every position of every chunk counts, for every matrix of a block
(`blk.*`; the LM head is not included, as llama-imatrix leaves it out by
default). For W [N, K] the entry is `W.in_sum2` (f32 [K], as a [1, K]
array: one matrix) and `W.counts` (f32 [1, 1]: the number of activation
rows summed)."""

import os
import tempfile

import numpy as np

from . import emit, ir, nn

ir.internal_module(__file__)


def build_linear_input_stats(model, batch, seq, entry="linear_input_stats"):
    """(MLIR text, {matrix name: result name}): `linear_input_stats(tokens
    [B, T]) -> s0, s1, …`, each s_i [K] the column-wise sum of squares over
    the B·T positions of an input that block matrices read (the map says
    which); weights frozen."""
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (batch, seq), "i32")
        with nn.observe_linear_inputs() as seen:
            model.hidden(tokens)
        results, names, squares = [], {}, {}
        for name, x in seen:
            if not name.startswith("blk.") or name in names:
                continue
            # q, k and v read one tensor: its squares are summed once.
            if id(x) not in squares:
                x2 = ir.reshape(x, (-1, x.shape[-1]))
                squares[id(x)] = f"s{len(results)}"
                results.append(((x2 * x2).sum(0), squares[id(x)]))
            names[name] = squares[id(x)]
        if not results:
            raise ValueError("the model has no block matrices to calibrate")
        text = emit.module([emit.Function(entry, results, graph=g)])
    return text, names


class ImatrixStats:
    """Sums of squared activations per matrix, accumulated in float64
    over runs of the step."""

    def __init__(self, names):
        self.names = list(names)
        self.sums = {}
        self.counts = {n: 0 for n in names}
        self.chunks = 0

    def add(self, name, column_sums, rows):
        s = np.asarray(column_sums, np.float64)
        if name in self.sums:
            self.sums[name] += s
        else:
            self.sums[name] = s.copy()
        self.counts[name] += rows

    def importance(self, name):
        """in_sum2 / counts: the per-column mean square."""
        return self.sums[name] / max(self.counts[name], 1)


def write(path, stats, datasets=(), chunk_size=0):
    """Writes `stats` to `path` in llama.cpp's imatrix GGUF layout,
    atomically (a temporary file in the same folder, then renamed)."""
    import gguf
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".imatrix-", suffix=".gguf", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for secrets
    try:
        w = gguf.GGUFWriter(tmp, "")
        # llama-imatrix's keys; GGUFWriter adds general.architecture only
        # when asked (add_architecture), which an imatrix has not.
        w.add_string("general.type", "imatrix")
        w.add_array("imatrix.datasets", [str(d) for d in datasets] or [""])
        w.add_uint32("imatrix.chunk_count", stats.chunks)
        w.add_uint32("imatrix.chunk_size", chunk_size)
        for name in stats.names:
            if name not in stats.sums:
                continue
            s = stats.sums[name].astype(np.float32)
            w.add_tensor(name + ".in_sum2", s.reshape(1, -1))
            w.add_tensor(name + ".counts",
                         np.array([[stats.counts[name]]], np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path):
    """{matrix name: (in_sum2 [n_mat, K] float64, counts [n_mat])} of an
    imatrix GGUF (llama-imatrix's or qcc's)."""
    import gguf
    r = gguf.GGUFReader(path)
    sums, counts = {}, {}
    for t in r.tensors:
        data = np.asarray(t.data, np.float64)
        if t.name.endswith(".in_sum2"):
            n_mat = int(t.shape[1]) if len(t.shape) > 1 else 1
            sums[t.name[:-len(".in_sum2")]] = data.reshape(n_mat, -1)
        elif t.name.endswith(".counts"):
            counts[t.name[:-len(".counts")]] = data.reshape(-1)
    return {n: (sums[n], counts.get(n, np.zeros(len(sums[n])))) for n in sums}
