"""Tests for mimtext.checkpoint: orbax round trips, latest/best tracking, errors, JSON files."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mimtext.checkpoint import Checkpointer, CheckpointError, load_json, save_json


def _params(scale: float = 1.0) -> dict:
  return {
      "encoder": {"w": scale * jnp.arange(12.0).reshape(3, 4), "b": scale * jnp.ones((4,))},
      "decoder": {"out": {"w": scale * jnp.full((4, 2), 0.5)}},
  }


def _trained_opt_state(tx: optax.GradientTransformation, params: dict):
  """An optimizer state with non-zero moments: one update step on a fake gradient."""
  state = tx.init(params)
  grads = jax.tree.map(lambda x: 0.1 * x + 1.0, params)
  _, state = tx.update(grads, state, params)
  return state


def _assert_trees_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save(ckpt: Checkpointer, step: int, loss: float, tx=None) -> bool:
  params = _params(float(step))
  opt_state = (tx or optax.adam(1e-3)).init(params)
  return ckpt.save(step, params=params, opt_state=opt_state, data_state={"step": step},
                   metrics={"valid_loss": loss, "train_loss": 2.0 * step})


def _step_dirs(workdir) -> list[str]:
  root = os.path.join(workdir, "checkpoints")
  return sorted((d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))), key=int)


@pytest.mark.parametrize("make_tx", [
    lambda: optax.adam(1e-3),
    lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9)),
], ids=["adam", "sgd_clip"])
def test_round_trip_params_and_optax_state(tmp_path, make_tx):
  tx = make_tx()
  params = _params()
  opt_state = _trained_opt_state(tx, params)
  with Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(7, params=params, opt_state=opt_state, data_state={"epoch": 1},
              metrics={"valid_loss": 1.5})
    out = ckpt.restore(7, params_template=_params(0.0), opt_state_template=tx.init(params))
  assert out["step"] == 7
  _assert_trees_equal(out["params"], params)
  _assert_trees_equal(out["opt_state"], opt_state)
  # The optax namedtuple types come back (tree structures include the node types).
  assert [type(s) for s in out["opt_state"]] == [type(s) for s in opt_state]
  assert out["metrics"] == {"valid_loss": 1.5}


def test_latest_and_best_tracking_keeps_only_latest_and_best(tmp_path):
  workdir = str(tmp_path)
  losses = [3.0, 2.0, 2.5, math.nan, 1.0]
  expected = [  # (became best, latest, best, steps on disk)
      (True, 1, 1, [1]),
      (True, 2, 2, [2]),
      (False, 3, 2, [2, 3]),
      (False, 4, 2, [2, 4]),
      (True, 5, 5, [5]),
  ]
  with Checkpointer(workdir) as ckpt:
    assert ckpt.latest_step() is None and ckpt.best_step() is None and ckpt.all_steps() == []
    for step, (loss, (improved, latest, best, steps)) in enumerate(zip(losses, expected), 1):
      assert _save(ckpt, step, loss) is improved
      assert (ckpt.latest_step(), ckpt.best_step(), ckpt.all_steps()) == (latest, best, steps)
      assert _step_dirs(workdir) == [str(s) for s in steps]
    assert ckpt.best_value() == 1.0


def test_nan_first_and_max_mode(tmp_path):
  with Checkpointer(str(tmp_path), best_metric="valid_loss", best_mode="max") as ckpt:
    assert not _save(ckpt, 1, math.nan)
    assert ckpt.best_step() is None and ckpt.all_steps() == [1]
    assert _save(ckpt, 2, 1.0)
    assert not _save(ckpt, 3, 0.5)
    assert _save(ckpt, 4, 2.0)
    assert (ckpt.best_step(), ckpt.all_steps()) == (4, [4])


def test_fresh_checkpointer_sees_latest_and_best(tmp_path):
  workdir = str(tmp_path)
  with Checkpointer(workdir) as ckpt:
    for step, loss in enumerate([3.0, 2.0, 2.5, math.nan], 1):
      _save(ckpt, step, loss)
  with Checkpointer(workdir) as again:
    assert (again.latest_step(), again.best_step(), again.best_value()) == (4, 2, 2.0)
    # The restored best value still ranks new saves: 2.2 is worse than 2.0, 1.9 better.
    assert not _save(again, 5, 2.2)
    assert (again.best_step(), again.all_steps()) == (2, [2, 5])
    assert _save(again, 6, 1.9)
    assert again.all_steps() == [6]


def test_restore_best_int_and_latest(tmp_path):
  with Checkpointer(str(tmp_path)) as ckpt:
    for step, loss in enumerate([3.0, 2.0, 2.5], 1):
      _save(ckpt, step, loss)
    template = _params(0.0)
    for which, step in [("best", 2), (2, 2), ("latest", 3), (3, 3)]:
      out = ckpt.restore(which, params_template=template)
      assert out["step"] == step
      _assert_trees_equal(out["params"], _params(float(step)))
      assert out["data_state"] == {"step": step}
      assert out["metrics"]["train_loss"] == 2.0 * step


def test_restore_params_without_opt_state(tmp_path):
  workdir = str(tmp_path)
  with Checkpointer(workdir) as ckpt:
    _save(ckpt, 1, 1.0)
  # Without an opt_state template the optimizer state is never read: remove it to prove it.
  opt_dir = os.path.join(workdir, "checkpoints", "1", "opt_state")
  for root, dirs, files in os.walk(opt_dir, topdown=False):
    for name in files:
      os.remove(os.path.join(root, name))
    for name in dirs:
      os.rmdir(os.path.join(root, name))
  with Checkpointer(workdir) as ckpt:
    out = ckpt.restore(params_template=_params(0.0))
  assert out["opt_state"] is None
  _assert_trees_equal(out["params"], _params(1.0))


def test_resolve_step_errors_name_workdir_and_steps(tmp_path):
  empty = str(tmp_path / "empty_run")
  with Checkpointer(empty) as ckpt:
    for which in ("latest", "best", 0):
      with pytest.raises(CheckpointError, match="empty_run") as info:
        ckpt.resolve_step(which)
      assert "available steps: none" in str(info.value)
  run = str(tmp_path / "run")
  with Checkpointer(run) as ckpt:
    _save(ckpt, 3, 1.0)
    _save(ckpt, 4, 2.0)
    assert ckpt.resolve_step("latest") == 4 and ckpt.resolve_step("best") == 3
    with pytest.raises(CheckpointError, match=r"run.*available steps: \[3, 4\]"):
      ckpt.resolve_step(2)
    with pytest.raises(CheckpointError, match="latest"):
      ckpt.resolve_step("newest")


def test_template_of_another_shape_raises(tmp_path):
  with Checkpointer(str(tmp_path)) as ckpt:
    _save(ckpt, 1, 1.0)
    wrong = _params(0.0)
    wrong["encoder"]["w"] = jnp.zeros((3, 5))
    with pytest.raises(CheckpointError, match=r"encoder/w.*\(3, 4\).*\(3, 5\)"):
      ckpt.restore(1, params_template=wrong)
    extra = _params(0.0)
    extra["decoder"]["bias"] = jnp.zeros((2,))
    with pytest.raises(CheckpointError, match=r"decoder/bias.*not in the checkpoint"):
      ckpt.restore(1, params_template=extra)
    bigger = _params(0.0)
    bigger["encoder"]["w"] = jnp.zeros((3, 5))
    tx = optax.adam(1e-3)
    with pytest.raises(CheckpointError, match=r"opt_state.*mu/encoder/w.*\(3, 4\).*\(3, 5\)"):
      ckpt.restore(1, params_template=_params(0.0), opt_state_template=tx.init(bigger))


def test_data_state_json_round_trip(tmp_path):
  data_state = {"epoch": 2, "seed": 17, "files": ["a.txt", "b.txt"],
                "iterator": {"next_index": 1234, "shard": "1/4"}, "done": False}
  with Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(10, params=_params(), opt_state=optax.sgd(0.1).init(_params()),
              data_state=data_state, metrics={"valid_loss": np.float32(0.25)})
    out = ckpt.restore(10, params_template=_params())
  assert out["data_state"] == data_state
  assert out["metrics"] == {"valid_loss": 0.25}


def test_save_rejects_old_step(tmp_path):
  with Checkpointer(str(tmp_path)) as ckpt:
    _save(ckpt, 5, 1.0)
    with pytest.raises(CheckpointError, match="step 5 is already saved"):
      _save(ckpt, 5, 0.5)


def test_restore_onto_template_sharding(tmp_path):
  devices = np.array(jax.devices()[:4])
  mesh = Mesh(devices, ("data",))
  sharded = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  params = {"w": jax.device_put(jnp.arange(8.0), sharded)}
  with Checkpointer(str(tmp_path)) as ckpt:
    # A stateless optimizer's state has no leaves (orbax cannot save it); it comes back as given.
    empty_state = optax.set_to_zero().init(params)
    ckpt.save(1, params=params, opt_state=empty_state, data_state={}, metrics={"valid_loss": 1.0})
    template = {"w": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=replicated)}
    out = ckpt.restore(1, params_template=template, opt_state_template=empty_state)
  assert out["opt_state"] == empty_state
  assert out["params"]["w"].sharding == replicated
  np.testing.assert_array_equal(np.asarray(out["params"]["w"]), np.arange(8.0))


def test_save_json_load_json(tmp_path):
  workdir = str(tmp_path / "run")
  config = {"model": "smim", "latent": 16, "lr": 1e-3, "layers": [1, 2]}
  save_json(workdir, "config.json", config)
  assert load_json(workdir, "config.json") == config
  save_json(workdir, "config.json", {"model": "svae"})  # overwrite in place
  assert load_json(workdir, "config.json") == {"model": "svae"}
  assert os.listdir(workdir) == ["config.json"]  # no temporary file left behind
  with pytest.raises(CheckpointError, match="vocab.json"):
    load_json(workdir, "vocab.json")


def _largest_file(directory: str) -> str:
  files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
  return max(files, key=os.path.getsize)


def _big_params(scale: float = 1.0) -> dict:
  return {"w": scale * jnp.linspace(-1.0, 1.0, 4096).reshape(64, 64)}


def _save_big_and_damage(workdir: str, damage) -> dict:
  """Saves `_big_params` at step 1, then rewrites the largest file of its params item (the array
  data) with `damage(bytes) -> bytes`; returns the params."""
  params = _big_params()
  with Checkpointer(workdir) as ckpt:
    ckpt.save(1, params=params, opt_state=optax.sgd(0.1).init(params), data_state={},
              metrics={"valid_loss": 1.0})
    _assert_trees_equal(ckpt.restore(1, params_template=params)["params"], params)
  path = _largest_file(os.path.join(workdir, "checkpoints", "1", "params"))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(damage(data))
  return params


def _flip_64_bytes_in_the_middle(data: bytes) -> bytes:
  data = bytearray(data)
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
  return bytes(data)


def test_flipped_bytes_in_params_are_detected(tmp_path):
  # The flipped bytes still decode (to other numbers): only the checksum can tell.
  workdir = str(tmp_path)
  params = _save_big_and_damage(workdir, _flip_64_bytes_in_the_middle)
  with Checkpointer(workdir, read_only=True) as ckpt:
    with pytest.raises(CheckpointError) as info:
      ckpt.restore(1, params_template=params)
  assert str(info.value) == (
      f"checkpoint step 1 in {workdir}/checkpoints is corrupt: the params arrays differ from the "
      "checksum recorded when they were saved (restore the directory from a copy, or evaluate "
      "another step)")


def test_a_truncated_params_file_names_the_item(tmp_path):
  # Half the array data is gone: it no longer decodes, and the error names the item's directory.
  workdir = str(tmp_path)
  params = _save_big_and_damage(workdir, lambda data: data[:len(data) // 2])
  with Checkpointer(workdir, read_only=True) as ckpt:
    with pytest.raises(CheckpointError) as info:
      ckpt.restore(1, params_template=params)
  message = str(info.value)
  assert message.startswith(f"cannot read {workdir}/checkpoints/1/params (params of checkpoint "
                            "step 1; corrupt?): "), message
  assert message.endswith("; restore the directory from a copy, or use another step")
  assert "\n" not in message


def test_checksum_mismatch_names_the_item(tmp_path):
  workdir = str(tmp_path)
  params = _params()
  with Checkpointer(workdir) as ckpt:
    _save(ckpt, 1, 1.0)
  # Arrays that decode fine but differ from what was saved (e.g. a file swapped in from another
  # step): only the checksum can tell.
  integrity = os.path.join(workdir, "checkpoints", "1", "integrity", "metadata")
  with open(integrity) as f:
    recorded = json.load(f)
  with open(integrity, "w") as f:
    json.dump({**recorded, "params": "0" * 64}, f)
  with Checkpointer(workdir) as ckpt:
    with pytest.raises(CheckpointError, match="corrupt: the params arrays differ"):
      ckpt.restore(1, params_template=params)


def test_evaluation_needs_neither_data_state_nor_opt_state(tmp_path):
  workdir = str(tmp_path)
  with Checkpointer(workdir) as ckpt:
    _save(ckpt, 1, 1.0)
  step_dir = os.path.join(workdir, "checkpoints", "1")
  for item in ("data_state", "opt_state"):
    for root, dirs, files in os.walk(os.path.join(step_dir, item), topdown=False):
      for name in files:
        os.remove(os.path.join(root, name))
      for name in dirs:
        os.rmdir(os.path.join(root, name))
    os.rmdir(os.path.join(step_dir, item))
  with Checkpointer(workdir, read_only=True) as ckpt:
    out = ckpt.restore("best", params_template=_params(0.0), data_state=False)
    _assert_trees_equal(out["params"], _params(1.0))
    assert out["data_state"] is None and out["metrics"]["valid_loss"] == 1.0
    # A training resume needs the data state: the error names the missing directory.
    with pytest.raises(CheckpointError, match=r"incomplete: .*1/data_state is missing"):
      ckpt.restore("latest", params_template=_params(0.0))


def test_corrupt_json_files_are_named(tmp_path):
  workdir = str(tmp_path)
  save_json(workdir, "config.json", {"a": 1})
  assert load_json(workdir, "config.json") == {"a": 1}
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write('{"a": 1')  # truncated
  with pytest.raises(CheckpointError, match=r"config.json is corrupt"):
    load_json(workdir, "config.json")
  with Checkpointer(workdir) as ckpt:
    _save(ckpt, 1, 1.0)
  with open(os.path.join(workdir, "checkpoints", "1", "data_state", "metadata"), "w") as f:
    f.write("{")
  with Checkpointer(workdir) as ckpt:
    with pytest.raises(CheckpointError) as info:
      ckpt.restore(1, params_template=_params(0.0))
  message = str(info.value)  # names the item that fails, not only the step
  assert message.startswith(f"cannot read {workdir}/checkpoints/1/data_state (data_state of "
                            "checkpoint step 1; corrupt?): JSONDecodeError: "), message
  assert "\n" not in message


def _remove_tree(path):
  for root, dirs, files in os.walk(path, topdown=False):
    for name in files:
      os.remove(os.path.join(root, name))
    for name in dirs:
      os.rmdir(os.path.join(root, name))
  os.rmdir(path)


def test_a_checkpoint_that_lost_its_checksums_is_corrupt(tmp_path, caplog):
  """Only a checkpoint written before checksums existed restores unverified (said once); one of
  this version without its integrity item is refused."""
  workdir = str(tmp_path)
  with Checkpointer(workdir) as ckpt:
    _save(ckpt, 1, 0.5)  # the best
    _save(ckpt, 2, 1.0)  # the latest
    assert ckpt.metrics(1) == {"valid_loss": 0.5, "train_loss": 2.0}  # no format marker
  _remove_tree(os.path.join(workdir, "checkpoints", "1", "integrity"))
  with Checkpointer(workdir, read_only=True) as ckpt:
    with pytest.raises(CheckpointError, match=r"step 1 .* is corrupt: .*1/integrity, the "
                                              r"checksums it was saved with, is missing"):
      ckpt.restore(1, params_template=_params(0.0))
  # A checkpoint of an older version: no checksums and no format marker in its metrics.
  for step in ("1", "2"):
    path = os.path.join(workdir, "checkpoints", step, "metrics", "metrics")
    with open(path) as f:
      saved = json.load(f)
    saved.pop("checkpoint_format")
    with open(path, "w") as f:
      json.dump(saved, f)
  _remove_tree(os.path.join(workdir, "checkpoints", "2", "integrity"))
  with caplog.at_level("WARNING"):
    with Checkpointer(workdir, read_only=True) as ckpt:
      _assert_trees_equal(ckpt.restore(1, params_template=_params(0.0))["params"], _params(1.0))
      ckpt.restore(2, params_template=_params(0.0))
  assert sum("written before checksums" in r.getMessage() for r in caplog.records) == 1


def test_a_step_with_unreadable_metrics_is_named_and_training_goes_on_from_the_others(tmp_path,
                                                                                     caplog):
  workdir = str(tmp_path)
  with Checkpointer(workdir) as ckpt:
    _save(ckpt, 1, 0.5)  # the best
    _save(ckpt, 2, 1.0)  # the latest
  metrics = os.path.join(workdir, "checkpoints", "2", "metrics", "metrics")
  with open(metrics, "w") as f:
    f.write('{"valid_loss": 1.')  # cut short
  with pytest.raises(CheckpointError, match=r"^checkpoint step 2 is corrupt: .*2/metrics/metrics "
                                            r"is unreadable .*move that step directory away"):
    Checkpointer(workdir, read_only=True)
  with caplog.at_level("WARNING"):
    with Checkpointer(workdir) as ckpt:
      assert ckpt.latest_step() == 1
      _assert_trees_equal(ckpt.restore("latest", params_template=_params(0.0))["params"],
                          _params(1.0))
  assert any("checkpoint step 2 is corrupt" in r.getMessage() and "moved it to" in r.getMessage()
             for r in caplog.records)
  assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "2"))
