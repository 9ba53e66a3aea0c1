"""What a run tells (issue 10): metrics.jsonl records, TensorBoard event files, progress lines."""

import glob
import json
import logging
import os
import pathlib
import struct
import sys

import numpy as np
import pytest

from mimtext import config as config_lib
from mimtext import experiment
from mimtext import optim
from mimtext import reporting
from mimtext import train as train_lib

_METRICS = {"loss": 3.0, "rec": 2.5, "rec_per_token": 0.5, "kl": 0.5, "post_std": 0.9,
            "frac_at_floor": 0.0, "grad_norm": 1.0}
_VALID = {"criterion": 3.1, "rec": 2.6, "rec_per_token": 0.52, "kl": 0.5, "post_std": 0.9,
          "frac_at_floor": 0.0, "num_sentences": 20.0}


def _read_events(logdir):
  """(step, {tag: value}, session_log_status) of the events of every file, in file-name order.

  Parses the TFRecord framing (length, masked CRC of the length, data, masked CRC of the data)
  and checks both CRCs, so the files are what TensorBoard reads.
  """
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = pathlib.Path(path).read_bytes()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
      assert header_crc == masked_crc32c(header), path
      payload = data[pos + 12:pos + 12 + length]
      (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
      assert payload_crc == masked_crc32c(payload), path
      pos += 16 + length
      event = event_pb2.Event.FromString(payload)
      if event.HasField("file_version"):  # each file's first event: no data
        continue
      values = {v.tag: v.simple_value for v in event.summary.value}
      status = event.session_log.status if event.HasField("session_log") else None
      events.append((event.step, values, status))
  return events


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize("seconds,text", [(0, "0m00s"), (59.9, "0m59s"), (61, "1m01s"),
                                          (3599, "59m59s"), (3600, "1h00m"), (3725, "1h02m"),
                                          (100 * 3600 + 60, "100h01m"), (-5, "0m00s")])
def test_format_duration(seconds, text):
  assert reporting.format_duration(seconds) == text


def test_plural():
  assert reporting.plural(1, "epoch") == "1 epoch"
  assert reporting.plural(2, "epoch") == "2 epochs"
  assert reporting.plural(0, "validation") == "0 validations"
  assert reporting.plural(3, "child", "children") == "3 children"
  stop = optim.EarlyStopping(patience=1)
  stop.update(1.0), stop.update(2.0)
  assert "1 validation without improvement" in stop.stop_reason()


def test_eta_takes_the_nearer_of_planned_steps_and_max_minutes(monkeypatch):
  reporter = reporting.Reporter("/nonexistent", max_minutes=1, tensorboard=False)
  reporter.planned_steps, reporter.run_start_step = 100, 0
  monkeypatch.setattr(reporter, "elapsed", lambda: 10.0)
  assert reporter.eta(10) == pytest.approx(50.0)  # 90 steps at 1 step/s, but 50 s of max_minutes
  reporter.max_minutes = 0
  assert reporter.eta(10) == pytest.approx(90.0)
  reporter.planned_steps = None
  assert reporter.eta(10) is None


# ----------------------------------------------------------------------------- metrics.jsonl


def test_metrics_records_keep_integers_integers(tmp_path):
  writer = reporting.MetricsWriter(str(tmp_path))
  writer.write({"split": "train", "step": np.int32(313), "epoch": 2, "loss": np.float32(2.5),
                "count": 3.0, "bad": float("inf"), "ok": True})
  line = pathlib.Path(writer.path).read_text()
  assert '"step": 313' in line and '"epoch": 2,' in line and "313.0" not in line
  record = json.loads(line)
  assert type(record["step"]) is int and type(record["epoch"]) is int
  assert type(record["loss"]) is float and record["count"] == 3.0 and type(record["count"]) is float
  assert record["bad"] is None and record["ok"] is True


# ----------------------------------------------------------------------------- the reporter


def _log_one_epoch(reporter, steps=(1, 2)):
  for _ in steps:
    reporter.add_step({**_METRICS, "finite": np.float32(1.0)}, tokens=100)
  window = reporter.summarize_window(steps[-1])
  assert window.non_finite == [] and "finite" not in window.means
  reporter.log_train(steps[-1], 1, 1e-3, window.means)
  reporter.log_validation(steps[-1], 1, _VALID, end_of_epoch=True)


def test_reporter_writes_readable_event_files_with_the_records(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  workdir = str(tmp_path)
  with reporting.Reporter(workdir, max_epochs=3, tensorboard=True) as reporter:
    reporter.start(0, planned_steps=6)
    _log_one_epoch(reporter)
    assert reporter.tensorboard is not None and reporter.tensorboard.enabled
    # Flushed at each line: readable while the writer is still open (live curves).
    assert [e[0] for e in _read_events(os.path.join(workdir, "tensorboard"))] == [1, 2, 2]
  events = _read_events(os.path.join(workdir, "tensorboard"))
  from tensorboardX.proto import event_pb2
  start, train, valid = events
  assert start[0] == 1 and start[2] == event_pb2.SessionLog.START  # purges steps >= 1
  assert train[0] == 2 and set(train[1]) == {
      "train/epoch", "train/learning_rate", "train/tokens_per_sec",
      *(f"train/{k}" for k in _METRICS)}
  assert train[1]["train/loss"] == pytest.approx(3.0) and train[1]["train/epoch"] == 1
  assert valid[0] == 2 and set(valid[1]) == {"valid/epoch", *(f"valid/{k}" for k in _VALID)}
  assert valid[1]["valid/criterion"] == pytest.approx(3.1)
  assert [(r["split"], r["step"], r["epoch"]) for r in _records(workdir)] == [
      ("train", 2, 1), ("valid", 2, 1)]
  # The lines number the epoch from 1, the progress line and the validation after it alike.
  assert "step 2/6 epoch 1/3 | loss 3.000" in caplog.text and "ETA" in caplog.text
  assert "validation after step 2 (end of epoch 1/3): criterion 3.100" in caplog.text


def test_a_resumed_reporter_purges_what_was_written_after_its_step(tmp_path):
  workdir = str(tmp_path)
  with reporting.Reporter(workdir, tensorboard=True) as reporter:
    reporter.start(0)
    _log_one_epoch(reporter, steps=(1, 2))
    _log_one_epoch(reporter, steps=(3, 4))
  with reporting.Reporter(workdir, tensorboard=True) as reporter:  # resumed from step 2
    assert reporter.start(2) == 2
    _log_one_epoch(reporter, steps=(3,))
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))) == 2
  events = _read_events(os.path.join(workdir, "tensorboard"))
  starts = [e[0] for e in events if e[2] is not None]
  assert starts == [1, 3]  # TensorBoard drops the first file's step-4 events at the second START
  assert [r["step"] for r in _records(workdir)] == [2, 2, 3, 3]


def test_event_files_can_be_switched_off_without_the_config(tmp_path, monkeypatch):
  monkeypatch.setenv(reporting.TENSORBOARD_ENV, "0")
  with reporting.Reporter(str(tmp_path)) as reporter:
    reporter.start(0)
    _log_one_epoch(reporter)
  assert not (tmp_path / "tensorboard").exists() and len(_records(str(tmp_path))) == 2


def test_without_tensorboardx_one_warning_and_metrics_as_usual(tmp_path, monkeypatch, caplog):
  caplog.set_level(logging.WARNING)
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
  monkeypatch.setattr(reporting, "_tensorboard_warned", False)
  for i in range(2):
    workdir = tmp_path / str(i)
    workdir.mkdir()
    with reporting.Reporter(str(workdir), tensorboard=True) as reporter:
      reporter.start(0)
      _log_one_epoch(reporter)
    assert not (workdir / "tensorboard").exists() and len(_records(str(workdir))) == 2
  assert caplog.text.count("tensorboardX cannot be imported") == 1


def test_a_non_finite_step_is_named(tmp_path):
  reporter = reporting.Reporter(str(tmp_path), tensorboard=False)
  for finite in (1.0, 0.0, 1.0, 0.0):
    reporter.add_step({**_METRICS, "finite": np.float32(finite)}, tokens=1)
  assert reporter.summarize_window(14).non_finite == [12, 14]


# ----------------------------------------------------------------------------- a real run


def test_a_training_run_writes_curves_and_numbers_epochs_from_one(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  config = config_lib.get_config()
  for field, value in {"model.embed_dim": 8, "model.hidden_dim": 16, "model.latent_dim": 4,
                       "data.builtin_train_size": 64, "data.builtin_eval_size": 20,
                       "batch_size": 16, "eval_batch_size": 20, "log_every_steps": 2,
                       "num_devices": 1, "max_epochs": 2, "max_steps": 6}.items():
    experiment.set_config_value(config, field, value)
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(config, workdir)  # 4 steps an epoch: epoch 1, half of epoch 2
  records = _records(workdir)
  assert [(r["split"], r["step"], r["epoch"]) for r in records] == [
      ("train", 1, 1), ("train", 2, 1), ("train", 4, 1), ("valid", 4, 1), ("train", 6, 2),
      ("valid", 6, 2)]
  assert all(type(r["step"]) is int and type(r["epoch"]) is int for r in records)
  assert "step 4/6 epoch 1/2 |" in caplog.text
  assert "validation after step 4 (end of epoch 1/2)" in caplog.text
  assert "validation after step 6 (in epoch 2/2)" in caplog.text
  events = _read_events(os.path.join(workdir, "tensorboard"))
  assert [e[0] for e in events if "train/loss" in e[1]] == [1, 2, 4, 6]
  assert [e[0] for e in events if "valid/criterion" in e[1]] == [4, 6]
  valid = {e[0]: e[1]["valid/criterion"] for e in events if "valid/criterion" in e[1]}
  assert valid == pytest.approx({r["step"]: r["criterion"] for r in records
                                 if r["split"] == "valid"})
