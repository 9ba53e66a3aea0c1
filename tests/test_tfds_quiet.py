"""Preparing and loading a corpus through TFDS prints none of TFDS's noise, and logs one line of
ours.

TFDS logs "Using custom data configuration ..." (WARNING, at every builder construction) and
"Variant folder ... has no dataset_info.json", prints "Downloading and preparing dataset Unknown
size ..." and "... Subsequent calls will reuse this data." for local files, and draws nested tqdm
bars ("Generating splits...", "Shuffling ..."). `tfds_text.quiet_tfds` drops all of it while our
builder works, and restores TFDS's settings afterwards.
"""

import logging as py_logging
import os

from absl import logging
import pytest
import tensorflow_datasets as tfds

from mimtext.data import tfds_text
from tests.test_tfds_text import _write_corpus  # one corpus writer for both TFDS test files

NOISE = ("Using custom data configuration", "Downloading and preparing", "Unknown size",
         "Generating splits", "Generating train examples", "Shuffling", "Subsequent calls",
         "has no dataset_info.json", "Load dataset info", "Generating dataset")
OURS = "TFDS text dataset of"


class _Records(py_logging.Handler):
  def __init__(self):
    super().__init__(py_logging.DEBUG)
    self.messages: list[str] = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture
def absl_records():
  """Every record that reaches the absl logger at INFO and above (ours and the libraries')."""
  saved = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  handler = _Records()
  logger = py_logging.getLogger("absl")
  logger.addHandler(handler)
  try:
    yield handler.messages
  finally:
    logger.removeHandler(handler)
    logging.set_verbosity(saved)


def _assert_quiet(text: str) -> None:
  for noise in NOISE:
    assert noise not in text, f"{noise!r} was printed:\n{text}"


def test_preparing_and_reusing_prints_no_tfds_noise_and_logs_one_line(tmp_path, capfd,
                                                                     absl_records):
  directory = _write_corpus(tmp_path / "tiny", train="a b c\nd e\n", valid="a b\n")
  tfds_dir = tmp_path / "tfds"
  assert list(tfds_text.load_text_split(directory, "train", tfds_dir=tfds_dir)) == ["a b c", "d e"]
  out, err = capfd.readouterr()
  _assert_quiet(out + err)
  _assert_quiet("\n".join(absl_records))
  ours = [m for m in absl_records if OURS in m]
  assert len(ours) == 1, absl_records
  assert "prepared in" in ours[0] and "train 2, valid 1" in ours[0]
  assert os.fspath(tfds_dir) in ours[0] and directory in ours[0]

  # The other split of the same run: prepared already in this process, nothing more is logged.
  absl_records.clear()
  assert list(tfds_text.load_text_split(directory, "valid", tfds_dir=tfds_dir)) == ["a b"]
  out, err = capfd.readouterr()
  _assert_quiet(out + err)
  assert not [m for m in absl_records if OURS in m], absl_records

  # A new process (the cache forgotten) reuses the prepared dataset, and says so once.
  tfds_text.clear_cache()
  absl_records.clear()
  assert list(tfds_text.load_text_split(directory, "valid", tfds_dir=tfds_dir)) == ["a b"]
  out, err = capfd.readouterr()
  _assert_quiet(out + err)
  _assert_quiet("\n".join(absl_records))
  ours = [m for m in absl_records if OURS in m]
  assert len(ours) == 1 and ": reused; cached in " + os.fspath(tfds_dir) in ours[0], absl_records


def test_quiet_tfds_restores_tfds_settings_and_keeps_errors(capfd, absl_records):
  tqdm_utils = tfds.core.utils.tqdm_utils
  tfds_logger = py_logging.getLogger("tensorflow_datasets")
  absl_filters = list(py_logging.getLogger("absl").filters)
  for bars in (True, False):
    tfds.display_progress_bar(bars)
    with tfds_text.quiet_tfds():
      assert tqdm_utils._active is False  # pylint: disable=protected-access
      logging.warning("ours still shows")
      logging.error("errors always show")
    assert tqdm_utils._active is bars  # pylint: disable=protected-access
  tfds.display_progress_bar(True)
  assert tfds_logger.level == py_logging.NOTSET
  assert py_logging.getLogger("absl").filters == absl_filters
  assert absl_records.count("ours still shows") == 2
  assert absl_records.count("errors always show") == 2
  capfd.readouterr()


def test_a_failed_preparation_still_restores_the_settings(tmp_path):
  directory = _write_corpus(tmp_path / "blank", train="a\n\n")
  tfds.display_progress_bar(True)
  with pytest.raises(tfds_text.text_files.DataError):
    tfds_text.load_text_split(directory, "train", tfds_dir=tmp_path / "tfds", blank_lines="error")
  assert tfds.core.utils.tqdm_utils._active is True  # pylint: disable=protected-access
  assert not any(isinstance(f, tfds_text._TfdsRecordFilter)  # pylint: disable=protected-access
                 for f in py_logging.getLogger("absl").filters)
