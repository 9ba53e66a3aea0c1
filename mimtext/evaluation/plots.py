"""Pictures of a run: training and validation curves from `metrics.jsonl`."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

# (metric, panel title); a panel is drawn when the run logged that metric.
_PANELS = (("rec", "reconstruction −log p(x|z) / sentence"),
           ("kl", "KL(q(z|x) ‖ p(z)) / sentence"),
           ("criterion", "criterion (what validation tracks)"),
           ("post_std", "mean posterior σ"),
           ("frac_at_floor", "fraction of dims at the log-variance floor"),
           ("learning_rate", "learning rate"))


def read_metrics(path: str) -> list[dict]:
  """The records of a run's metrics.jsonl (one JSON object per line)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(workdir: str, out_path: str | None = None) -> str:
  """Draws train and validation curves of `workdir/metrics.jsonl` into a PNG; returns its path."""
  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  if not records:
    raise ValueError(f"{workdir}/metrics.jsonl has no records to plot")
  panels = [(k, t) for k, t in _PANELS if any(r.get(k) is not None for r in records)]
  cols = min(3, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.axis("off")
  for ax, (key, title) in zip(axes.flat, panels):
    for split, style in (("train", "-"), ("valid", "o-")):
      points = [(r["step"], r[key]) for r in records
                if r.get("split") == split and r.get(key) is not None]
      if points:
        ax.plot(*zip(*points), style, label=split, markersize=3)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    if key in ("post_std", "learning_rate"):
      ax.set_yscale("log")
    ax.legend(fontsize=7)
  fig.tight_layout()
  out_path = out_path or os.path.join(workdir, "curves.png")
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path
