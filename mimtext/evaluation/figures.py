"""Figures of the papers' analyses, drawn as PNG files (matplotlib, Agg backend).

- `plot_pairwise_histograms`: seed 000 Figure 3, histograms of log p(x_i|z_j) and log q(z_i|x_j)
  for i = j (same sentence) against i ≠ j; overlap means codes that do not tell sentences apart.
- `plot_melbo_vs_size`: seed 000 Figure 5, the MELBO against the evaluation-set size n
  (`information.melbo_vs_size`), mean ± one standard deviation over random subsets; labelled as
  what it is, not a bound on the model's NLL.
- `plot_class_heatmap`: a labelled heat map, e.g. seed 004 Figure 4 (per-class mean γ_d).

Every function returns the path it wrote. Notation: N sentences, n subset size.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

_BINS = 50


def _same_and_different(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
  """Finite diagonal (i = j) and off-diagonal (i ≠ j) entries of a square [N,N] matrix, and the
  number of non-finite entries left out."""
  matrix = np.asarray(matrix, np.float64)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"expected a square [N, N] matrix; got shape {matrix.shape}")
  same = np.eye(len(matrix), dtype=bool)
  finite = np.isfinite(matrix)
  return matrix[same & finite], matrix[~same & finite], int(np.sum(~finite))


def plot_pairwise_histograms(log_px: np.ndarray | None, log_q: np.ndarray | None,
                             out_path: str) -> str:
  """Seed 000 Figure 3: density histograms of [N,N] matrices, i = j against i ≠ j.

  Args:
    log_px: [i, j] = log p(x_i | z_j), z_j ~ q(z|x_j) (panel a), or None to leave it out.
    log_q: [i, j] = log q(z_i | x_j), z_i ~ q(z|x_i) (panel b; `information.pairwise_log_q`), or
      None.
    out_path: the PNG to write.

  Non-finite entries are dropped and counted in the panel title.
  """
  panels = [(m, title) for m, title in ((log_px, r"(a) $\log p(x_i \mid z_j)$"),
                                        (log_q, r"(b) $\log q(z_i \mid x_j)$")) if m is not None]
  if not panels:
    raise ValueError("give log_px, log_q or both")
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
  for ax, (matrix, title) in zip(axes.flat, panels):
    same, different, dropped = _same_and_different(matrix)
    values = np.concatenate([same, different])
    if values.size == 0:
      ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    else:
      bins = np.histogram_bin_edges(values, bins=_BINS)
      for data, label, color in ((same, "i = j", "tab:blue"), (different, "i ≠ j", "tab:orange")):
        if data.size:
          ax.hist(data, bins=bins, density=True, alpha=0.55, color=color,
                  label=f"{label} ({data.size})")
      ax.legend(fontsize=7)
    note = f"\n{dropped} non-finite entries left out" if dropped else ""
    ax.set_title(title + note, fontsize=9)
    ax.set_ylabel("density")
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def plot_melbo_vs_size(result: dict, out_path: str, true_entropy: float | None = None) -> str:
  """Seed 000 Figure 5: MELBO (nats per sentence) against the subset size n, log x axis.

  Args:
    result: `information.melbo_vs_size` output ("sizes", "mean", "std").
    out_path: the PNG to write.
    true_entropy: a known entropy of the sentences (e.g. the built-in grammar's), drawn as a dashed
      horizontal line: a valid bound stays above it up to sampling noise; MELBO need not.
  """
  sizes = np.asarray(result["sizes"], np.float64)
  mean = np.asarray(result["mean"], np.float64)
  std = np.asarray(result["std"], np.float64)
  order = np.argsort(sizes)
  sizes, mean, std = sizes[order], mean[order], std[order]
  fig, ax = plt.subplots(figsize=(5.0, 3.4))
  ax.plot(sizes, mean, "-", color="tab:blue", label="MELBO, mean over subsets")
  ax.fill_between(sizes, mean - std, mean + std, color="tab:blue", alpha=0.25, label="± 1 std")
  if true_entropy is not None:
    ax.axhline(true_entropy, color="tab:red", linestyle="--", label="true entropy")
  ax.set_xscale("log")
  ax.set_xlabel("subset size n")
  ax.set_ylabel("MELBO (not a bound on the model's NLL),\nnats / sentence", fontsize=8)
  subsets = result.get("num_subsets")
  ax.set_title("MELBO (not a bound on the model's NLL) vs evaluation-set size"
               + (f"\n({subsets} subsets per n)" if subsets else ""), fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def plot_class_heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
                       out_path: str, title: str, *, cmap: str = "viridis") -> str:
  """A heat map of a [rows, cols] matrix with labelled axes and a colour bar (seed 004 Figure 4).

  Values are written in the cells when the matrix is small (≤ 20 × 20).
  """
  matrix = np.asarray(matrix, np.float64)
  if matrix.ndim != 2 or matrix.shape != (len(row_labels), len(col_labels)):
    raise ValueError(f"matrix shape {matrix.shape} does not match {len(row_labels)} row and "
                     f"{len(col_labels)} column labels")
  rows, cols = matrix.shape
  fig, ax = plt.subplots(figsize=(min(2.0 + 0.45 * cols, 16.0), min(1.5 + 0.4 * rows, 12.0)))
  image = ax.imshow(matrix, cmap=cmap, aspect="auto")
  fig.colorbar(image, ax=ax)
  ax.set_xticks(range(cols), [str(c) for c in col_labels], rotation=90, fontsize=7)
  ax.set_yticks(range(rows), [str(r) for r in row_labels], fontsize=7)
  if rows <= 20 and cols <= 20:
    middle = np.nanmean(matrix) if np.isfinite(matrix).any() else 0.0
    for i in range(rows):
      for j in range(cols):
        ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=6,
                color="white" if matrix[i, j] < middle else "black")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def plot_k_sweep(rows: list[dict], out_path: str, true_entropy: float | None = None,
                 exact_nll: float | None = None) -> str:
  """The importance-weighted bounds against K (`bounds.k_sweep` rows), log x axis, ± 2 standard
  errors of each step from the previous K as error bars: a converged bound no longer moves by
  more than them.

  Args:
    rows: one dict per K with "K" and B_nll (B_step_stderr) for B in iw, posthoc_iw.
    out_path: the PNG to write.
    true_entropy, exact_nll: optional reference lines (a corpus's true entropy, a language
      model's exact NLL).
  """
  fig, ax = plt.subplots(figsize=(5.0, 3.4))
  ks = np.asarray([r["K"] for r in rows], np.float64)
  for bound, label, color in (("iw", "IW, model prior", "tab:blue"),
                              ("posthoc_iw", "IW, post-hoc prior", "tab:green")):
    if f"{bound}_nll" not in rows[0]:
      continue
    nll = np.asarray([r[f"{bound}_nll"] for r in rows], np.float64)
    err = np.asarray([2 * r.get(f"{bound}_step_stderr", 0.0) for r in rows], np.float64)
    ax.errorbar(ks, nll, yerr=err, fmt="o-", color=color, capsize=3, label=label)
  if true_entropy is not None:
    ax.axhline(true_entropy, color="tab:red", linestyle="--", label="true entropy")
  if exact_nll is not None:
    ax.axhline(exact_nll, color="black", linestyle=":", label="language model (exact)")
  ax.set_xscale("log")
  ax.set_xlabel("K (importance samples)")
  ax.set_ylabel("bound on −log p(x), nats / sentence", fontsize=8)
  ax.set_title("Importance-weighted bounds against K\n(bars: ± 2 s.e. of the step from the "
               "previous K)", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path
