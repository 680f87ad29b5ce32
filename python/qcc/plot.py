"""The loss curve of a training run as a PNG, drawn with matplotlib: the
loss of every step (light), its trailing mean, an optional target line and,
when the run validated, the validation perplexity on a second axis."""

import math


def _trailing_mean(values, k):
    out, acc, window = [], 0.0, []
    for v in values:
        window.append(v)
        acc += v
        if len(window) > k:
            acc -= window.pop(0)
        out.append(acc / len(window))
    return out


def loss_curve_png(path, steps, losses, title="loss", target=None,
                   val_steps=(), val_ppl=(), ylabel="loss (nats per token)"):
    """Writes the figure to `path` (atomically: a temporary file renamed)."""
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=100)
    pts = [(s, v) for s, v in zip(steps, losses) if math.isfinite(v)]
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, color="#b8b8b8", linewidth=0.8, label="loss (each step)")
        k = max(1, min(20, len(ys) // 5))
        ax.plot(xs, _trailing_mean(ys, k), color="#1f5fbf", linewidth=1.8,
                label=f"mean of {k} steps" if k > 1 else "loss")
    if target is not None:
        ax.axhline(target, color="#c03030", linestyle="--", linewidth=1,
                   label=f"target {target:g}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if val_steps:
        ax2 = ax.twinx()
        ax2.plot(val_steps, val_ppl, color="#2a9d4a", marker="o", linewidth=1.5,
                 label="validation perplexity")
        ax2.set_ylabel("validation perplexity")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
