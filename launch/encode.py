r"""Writes the codes of the sentences of a text file, one row per line, as a numpy array.

  python -m launch.encode --workdir=W --input=sentences.txt --output=emb.npy \
      [--step=best] [--batch_size=256] [--std_output=std.npy]

Each line of --input (UTF-8) is one sentence, split by the run's tokeniser (its
`data.tokenizer`: "whitespace", "lower" or "lower_punct", as in training) and read with the run's
vocabulary: words not in it become <unk> (their count is reported on stderr). --output gets a
float32 array [N,d], row i the code of line i (N = the number of lines, in order): the
deterministic code `sentence_ae.posterior_code` (the posterior mean μ; (1 − E_q[γ]) μ for HSVAE).
--std_output gets the posterior σ [N,d] (0 for an AE, which uses z = μ).

Blank lines (empty or whitespace only) are kept, encoded as the empty sentence `<sos> <eos>`, so
that row i is always line i; their count and first line numbers are reported on stderr. A
progress bar goes to stderr; the last line on stdout is "wrote N×d embeddings to PATH". Files are
written whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import numpy as np

from launch import common
from mimtext.data import text_files

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of a training run.", required=True)
_INPUT = flags.DEFINE_string("input", None, "Text file: one sentence per line (UTF-8).",
                             required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the [N,d] codes (.npy).",
                              required=True)
_STEP = flags.DEFINE_string("step", "best", "Checkpoint: best, latest or a step number.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Sentences encoded per batch.")
_STD_OUTPUT = flags.DEFINE_string("std_output", None,
                                  "Where to write the [N,d] posterior σ (.npy); optional.")

_SHOWN = 5  # line numbers / unknown words listed in the reports


def read_lines(path: str) -> list[str]:
  """The lines of a UTF-8 text file, whitespace-normalised, blank ones as "" (a final newline adds
  no line)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--input={path}: no such file")
  if os.path.isdir(path):
    raise app.UsageError(f"--input={path} is a directory, not a text file")
  # The reader of the training corpus (UTF-8, no NUL byte, the file and line named on failure),
  # keeping blank lines: each line of the input is one row of the output.
  return text_files.read_lines(path, blank_lines="keep").lines


def check_writable(flag: str, path: str) -> None:
  """A usage error unless `path` can be written: its folder exists and is writable, and it is not a
  folder itself. Checked before the model is loaded."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise app.UsageError(f"--{flag}={path} is a directory")
  if not os.path.isdir(folder):
    raise app.UsageError(f"--{flag}={path}: the folder {folder} does not exist")
  if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise app.UsageError(f"--{flag}={path}: not writable")


def save_array(path: str, array: np.ndarray) -> None:
  """`np.save` to exactly `path` (no ".npy" appended), through a temporary file renamed over it."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".encode-", suffix=".npy")
  try:
    with os.fdopen(fd, "wb") as f:
      np.save(f, array)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _listed(items, total: int) -> str:
  shown = ", ".join(str(x) for x in items[:_SHOWN])
  return shown + (", …" if total > _SHOWN else "")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  common.prepare_host()
  logging.set_verbosity(logging.ERROR)
  if _BATCH_SIZE.value < 1:
    raise app.UsageError(f"--batch_size={_BATCH_SIZE.value}: must be >= 1")
  lines = read_lines(_INPUT.value)
  outputs = [("output", _OUTPUT.value)]
  if _STD_OUTPUT.value:
    outputs.append(("std_output", _STD_OUTPUT.value))
  for flag, path in outputs:
    check_writable(flag, path)
  if len(outputs) == 2 and os.path.abspath(outputs[0][1]) == os.path.abspath(outputs[1][1]):
    raise app.UsageError("--output and --std_output name the same file")

  from mimtext import api  # pylint: disable=g-import-not-at-top (after the cheap checks)
  model = api.SentenceModel(common.load_run(_WORKDIR.value, _STEP.value))
  blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
  if blank:
    print(f"{len(blank)} blank line(s) encoded as the empty sentence (lines "
          f"{_listed(blank, len(blank))})", file=sys.stderr)
  unknown = model.unknown_words(lines)
  if unknown:
    common_words = [f"{w} ×{c}" for w, c in unknown.most_common(_SHOWN)]
    print(f"{sum(unknown.values())} word(s) not in the vocabulary read as <unk> "
          f"({len(unknown)} distinct: {_listed(common_words, len(unknown))})", file=sys.stderr)
  mean, std = model.encode(lines, batch_size=_BATCH_SIZE.value, progress=True)
  save_array(_OUTPUT.value, mean)
  if _STD_OUTPUT.value:
    save_array(_STD_OUTPUT.value, std)
    print(f"wrote {std.shape[0]}×{std.shape[1]} posterior σ to {_STD_OUTPUT.value}")
  print(f"wrote {mean.shape[0]}×{mean.shape[1]} embeddings to {_OUTPUT.value}")


if __name__ == "__main__":
  common.run(main)
