"""A TFDS manual-file builder over a corpus directory, read back as random-access data sources.

`TextLines` turns `DIR/{train,valid,test}.txt` (whichever exist) into `array_record` files with the
features `{"text": Text, "line": int64}` (the normalised line and its 1-based source line
number), in the original line order. Everything here works without TensorFlow: the examples are
serialised with TFDS's own protos, written as `array_record`, and read back through
`builder.as_data_source`.

Staleness: the builder config name is `<basename>-<fingerprint>`, the fingerprint a sha256 over the
split files' names, sizes and contents (and the blank-line policy), so a directory with other
contents (or an edited file) gets its own prepared dataset instead of silently reusing an old one.

Quiet: while this module prepares or opens a dataset (`quiet_tfds`), TFDS's own chatter is dropped:
its log records below ERROR ("Using custom data configuration ...", "Variant folder ... has no
dataset_info.json", "Generating dataset ...", "Load dataset info ..."), its stdout lines
("Downloading and preparing dataset Unknown size ...", "Dataset ... downloaded and prepared ...")
and its nested tqdm bars ("Generating splits...", "Shuffling ..."), which garble log files.
`prepare` logs one line of its own instead: the dataset was prepared (or reused), and where.

Once per process: `prepare` lists, hashes and prepares (or reuses) a directory on its first call
only; loading the other splits of the corpus (and loading it again) costs a `stat` of its files
and logs nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import logging as py_logging
import os
import re
import shutil
import time
from typing import Iterator, Sequence, overload

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mimtext.data import text_files

# Bump when the prepared format changes: it is part of every fingerprint.
_FORMAT_VERSION = "1"
_FILE_FORMAT = "array_record"
# Items fetched per `__getitems__` call when reading a whole split.
_READ_CHUNK = 4096


# Where TFDS's log records come from (absl records carry the caller's path).
_TFDS_PATH_MARK = f"{os.sep}tensorflow_datasets{os.sep}"


class _TfdsRecordFilter(py_logging.Filter):
  """Drops records below ERROR emitted from inside tensorflow_datasets; everything else passes."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.ERROR or _TFDS_PATH_MARK not in (record.pathname or "")


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
  """Within the block: no TFDS progress bars, no TFDS log records below ERROR; restored after.

  TFDS logs through absl (the "absl" Python logger, its records carrying TFDS's file path) and
  the "tensorflow_datasets" logger tree; both get the filter / level for the block only, so our
  own lines and other libraries' lines are untouched, and TFDS's errors still show. The progress
  bars are TFDS's own switch (`tfds.display_progress_bar`), set back to its previous state.
  """
  record_filter = _TfdsRecordFilter()
  absl_logger = py_logging.getLogger("absl")
  tfds_logger = py_logging.getLogger("tensorflow_datasets")
  saved_level = tfds_logger.level
  tqdm_utils = tfds.core.utils.tqdm_utils
  saved_bars = getattr(tqdm_utils, "_active", True)
  absl_logger.addFilter(record_filter)
  tfds_logger.setLevel(py_logging.ERROR)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(saved_bars)
    tfds_logger.setLevel(saved_level)
    absl_logger.removeFilter(record_filter)


def default_tfds_dir() -> str:
  """`$MIMTEXT_TFDS_DIR`, else `~/.cache/mimtext/tfds`."""
  return os.environ.get("MIMTEXT_TFDS_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "mimtext", "tfds")


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def directory_fingerprint(directory: str, splits: Sequence[str], blank_lines: str) -> str:
  """A 16-hex-digit digest of the split files (name, size, sha256) and the blank-line policy."""
  digest = hashlib.sha256(f"mimtext-text-lines/{_FORMAT_VERSION}/{blank_lines}".encode())
  for split in splits:
    path = text_files.split_path(directory, split)
    digest.update(f"|{split}|{os.path.getsize(path)}|{_file_sha256(path)}".encode())
  return digest.hexdigest()[:16]


def config_name(directory: str, fingerprint: str) -> str:
  """`<basename>-<fingerprint>`, the basename reduced to characters TFDS accepts in a name."""
  base = os.path.basename(os.path.normpath(os.path.abspath(directory)))
  base = re.sub(r"[^A-Za-z0-9_]+", "_", base).strip("_") or "corpus"
  return f"{base}-{fingerprint}"


@dataclasses.dataclass(eq=False)
class TextLinesConfig(tfds.core.BuilderConfig):
  """Which directory and splits a `TextLines` dataset holds.

  Attributes:
    source_dir: the corpus directory (also passed to TFDS as the manual directory).
    splits: the split names, each a `{split}.txt` in `source_dir`.
    blank_lines: the `text_files.read_lines` policy for blank lines.
  """

  source_dir: str = ""
  splits: tuple[str, ...] = ()
  blank_lines: str = "skip"


def make_config(data_dir: str | os.PathLike, *, blank_lines: str = "skip") -> TextLinesConfig:
  """The config for a corpus directory with every split file it holds.

  Raises:
    text_files.DataError: the directory is missing or holds no `*.txt` split.
  """
  data_dir = os.path.abspath(os.fspath(data_dir))
  if not os.path.isdir(data_dir):
    raise text_files.DataError(f"data directory {data_dir} does not exist")
  splits = tuple(text_files.available_splits(data_dir))
  if not splits:
    raise text_files.DataError(f"data directory {data_dir} holds no split file (*.txt)")
  fingerprint = directory_fingerprint(data_dir, splits, blank_lines)
  return TextLinesConfig(
      name=config_name(data_dir, fingerprint), version=TextLines.VERSION,
      description=f"{data_dir} splits {', '.join(splits)}",
      source_dir=data_dir, splits=splits, blank_lines=blank_lines)


class TextLines(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One example per non-blank line of each `{split}.txt` of a manual directory."""

  name = "mimtext_text_lines"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Text and 1-based line number of each non-blank line."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass a directory holding train.txt / valid.txt / test.txt (UTF-8, one whitespace-tokenised "
      "example per line) as the manual directory and through the builder config.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file.

    Overridden: TFDS's own lookup needs the `importlib_resources` backport for a builder defined in
    an (editable-installed) package, and that backport is not a dependency here.
    """
    return epath.Path(__file__)

  # TFDS prints these two to stdout around a preparation ("Downloading and preparing dataset
  # Unknown size ..." for local files, then "... Subsequent calls will reuse this data."); `prepare`
  # logs one line of its own instead.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Lines of a text corpus directory, whitespace-normalised, in file order.",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "line": tfds.features.Scalar(dtype=np.int64),
        }),
        disable_shuffling=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    source_dir = os.fspath(dl_manager.manual_dir) if dl_manager.manual_dir else config.source_dir
    return {split: self._generate_examples(text_files.split_path(source_dir, split))
            for split in config.splits}

  def _generate_examples(self, path: str) -> Iterator[tuple[int, dict]]:
    read = text_files.read_lines(path, blank_lines=self.builder_config.blank_lines)
    for key, (line, line_number) in enumerate(zip(read.lines, read.line_numbers)):
      yield key, {"text": line, "line": line_number}


def _as_text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TextSplitSource(Sequence[str]):
  """Random access to one prepared split: `source[i]` is line i (a str), `len(source)` its size."""

  def __init__(self, data_source, split: str, source_path: str):
    self._source = data_source
    self.split = split
    self.source_path = source_path

  def __len__(self) -> int:
    return len(self._source)

  @overload
  def __getitem__(self, index: int) -> str: ...

  @overload
  def __getitem__(self, index: slice) -> list[str]: ...

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [record["text"] for record in self._records(range(*index.indices(len(self))))]
    index = index.__index__()
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for a split of {len(self)} lines")
    return _as_text(self._source[index]["text"])

  def __iter__(self) -> Iterator[str]:
    for start in range(0, len(self), _READ_CHUNK):
      chunk = range(start, min(start + _READ_CHUNK, len(self)))
      yield from (record["text"] for record in self._records(chunk))

  def _records(self, indices: range) -> list[dict]:
    """Decoded records for `indices`, fetched in chunks."""
    records = []
    for start in range(0, len(indices), _READ_CHUNK):
      chunk = list(indices[start:start + _READ_CHUNK])
      for raw in self._source.__getitems__(chunk):
        records.append({"text": _as_text(raw["text"]), "line": int(raw["line"])})
    return records

  def read_all(self) -> text_files.TextLines:
    """All lines with their source line numbers, as `text_files.read_lines` returns them."""
    records = self._records(range(len(self)))
    return text_files.TextLines(lines=[r["text"] for r in records], path=self.source_path,
                                line_numbers=[r["line"] for r in records])


def prepare(data_dir: str | os.PathLike, *, tfds_dir: str | os.PathLike | None = None,
            blank_lines: str = "skip") -> TextLines:
  """Prepares (on first use) and returns the builder for a corpus directory.

  Once per process: the split files are listed, hashed (`make_config`) and the dataset prepared or
  reused on the first call for a directory (with its `tfds_dir` and `blank_lines`); later calls
  (the other splits of a run, a second `load_corpus` of the same corpus) return the same builder
  after a `stat` of the split files, unless one of them was added, removed or changed (size,
  mtime) since, or the prepared folder is gone: then the directory is fingerprinted again.

  TFDS's own output is silenced while it works (`quiet_tfds`); one line is logged (INFO), by the
  call that prepares: the dataset was prepared (with the time it took) or reused, its lines per
  split, and its folder.

  Raises:
    text_files.DataError: the directory is missing, has no split, or a split file is malformed
      (the same errors as `text_files.read_lines`; no dataset is left in `tfds_dir`). Every
      split file of the directory is validated, not only the one asked for.
  """
  data_dir = os.path.abspath(os.fspath(data_dir))
  tfds_dir = os.path.abspath(os.fspath(tfds_dir) if tfds_dir is not None else default_tfds_dir())
  key = (data_dir, tfds_dir, blank_lines)
  signature = _split_files_signature(data_dir)
  cached = _PREPARED.get(key)
  if (cached is not None and signature is not None and cached[0] == signature
      and os.path.isdir(os.fspath(cached[1].data_dir))):
    return cached[1]
  config = make_config(data_dir, blank_lines=blank_lines)
  with quiet_tfds():
    builder, action = _prepare_quietly(config, tfds_dir)
  sizes = ", ".join(f"{split} {builder.info.splits[split].num_examples:,}"
                    for split in config.splits)
  logging.info("TFDS text dataset of %s (lines: %s): %s; cached in %s", config.source_dir, sizes,
               action, builder.data_dir)
  if signature is not None:
    _PREPARED[key] = (signature, builder)
  return builder


# (corpus dir, tfds dir, blank-line policy) -> (`_split_files_signature`, prepared builder): what
# `prepare` did already in this process.
_PREPARED: dict[tuple[str, str, str], tuple[tuple, TextLines]] = {}


def clear_cache() -> None:
  """Forgets what `prepare` did in this process: the next call fingerprints and opens again (and
  logs its line), as a new process would."""
  _PREPARED.clear()


def _split_files_signature(data_dir: str) -> tuple | None:
  """(split, size, mtime_ns, inode) of each split file, or None when the directory cannot be read
  (`make_config` then names the problem)."""
  try:
    return tuple((split, st.st_size, st.st_mtime_ns, st.st_ino)
                 for split in text_files.available_splits(data_dir)
                 for st in [os.stat(text_files.split_path(data_dir, split))])
  except OSError:
    return None


# A partial preparation (TFDS's "incomplete.*" folder) this old is abandoned (a killed process):
# preparing a corpus of a few MB takes seconds.
ABANDONED_AFTER_S = 600.0


def remove_abandoned_preparations(config_dir: str, *, older_than_s: float = ABANDONED_AFTER_S
                                  ) -> list[str]:
  """Removes the "incomplete.*" folders that a killed preparation left in `config_dir` (those
  untouched for `older_than_s`; a concurrent preparation's recent one stays); returns them."""
  removed = []
  now = time.time()
  for path in glob.glob(os.path.join(config_dir, tfds.core.constants.INCOMPLETE_PREFIX + "*")):
    try:
      if now - os.path.getmtime(path) < older_than_s:
        continue
      shutil.rmtree(path)
    except OSError:
      continue
    removed.append(path)
    logging.warning("removed %s, a partial TFDS preparation left by a killed process", path)
  return removed


def _prepare_quietly(config: TextLinesConfig, tfds_dir: str) -> tuple[TextLines, str]:
  """The prepared builder, and what was done: "prepared in N s", "reused" or "prepared by
  another process". Partial preparations abandoned by killed processes are removed first."""
  builder = TextLines(config=config, data_dir=tfds_dir)
  remove_abandoned_preparations(os.path.dirname(os.fspath(builder.data_dir)))
  if builder.is_prepared():
    return builder, "reused"
  start = time.perf_counter()
  try:
    builder.download_and_prepare(
        file_format=_FILE_FORMAT,
        download_config=tfds.download.DownloadConfig(manual_dir=config.source_dir))
  except OSError:
    # Another process may have finished preparing the same fingerprint first (its rename won).
    if not TextLines(config=config, data_dir=tfds_dir).is_prepared():
      _remove_empty_config_dir(builder)
      raise
    return TextLines(config=config, data_dir=tfds_dir), "prepared by another process, reused"
  except Exception:
    _remove_empty_config_dir(builder)
    raise
  return (TextLines(config=config, data_dir=tfds_dir),
          f"prepared in {time.perf_counter() - start:.1f} s")


def _remove_empty_config_dir(builder: TextLines) -> None:
  """Removes the config folder a failed preparation leaves behind, if nothing else is in it."""
  config_dir = os.path.dirname(os.fspath(builder.data_dir))
  try:
    os.rmdir(config_dir)
  except OSError:
    pass  # Not empty (another version or a concurrent preparation) or already gone.


def load_text_split(data_dir: str | os.PathLike, split: str, *,
                    tfds_dir: str | os.PathLike | None = None,
                    blank_lines: str = "skip") -> TextSplitSource:
  """Random-access lines of `DIR/{split}.txt`, through a prepared TFDS `array_record` dataset.

  Args:
    data_dir: the corpus directory.
    split: e.g. "train", "valid", "test"; `DIR/{split}.txt` must exist.
    tfds_dir: where prepared datasets live (default `default_tfds_dir()`).
    blank_lines: "skip" or "error", as in `text_files.read_lines`.

  Returns:
    A `Sequence[str]` of the normalised non-blank lines, in file order.

  Raises:
    text_files.DataError: as `text_files.read_split_dir`.
  """
  source_path = text_files.check_split_file(data_dir, split)
  builder = prepare(data_dir, tfds_dir=tfds_dir, blank_lines=blank_lines)
  with quiet_tfds():
    data_source = builder.as_data_source(split=split)
  return TextSplitSource(data_source, split, source_path)
