"""The jitted train step: learning, data parallelism, NaN safety, schedules, config checks."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimtext import config as config_lib
from mimtext import objectives
from mimtext import optim
from mimtext import experiment
from mimtext import train as train_lib
from mimtext.models import sentence_ae

MODEL = sentence_ae.ModelConfig(vocab_size=20, embed_dim=8, hidden_dim=16, latent_dim=4,
                                embed_dropout=0.1)


def _batch(rows=8, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 9, size=rows).astype(np.int32)
  tokens = np.zeros((rows, 8), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, 0] = 1
    tokens[i, 1:n - 1] = rng.integers(4, 20, size=n - 2)
    tokens[i, n - 1] = 2
  return {"tokens": tokens, "lengths": lengths, "index": np.arange(rows, dtype=np.int32),
          "valid": np.ones(rows, np.float32)}


def _run(num_devices, name="mim", steps=3, optimizer=("adam", 1e-2, 0.0)):
  mesh = train_lib.make_mesh(num_devices)
  cfg = objectives.ObjectiveConfig(model=MODEL, name=name)
  opt = optim.make_optimizer(*optimizer)
  params = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  state = train_lib.replicate(train_lib.TrainState(jnp.asarray(0), params, opt.init(params)), mesh)
  step_fn = train_lib.make_train_step(objectives.get_loss(name), opt, cfg, mesh)
  batch = train_lib.shard_batch(_batch(), mesh)
  losses = []
  for _ in range(steps):
    state, metrics = step_fn(state, batch, jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
  return state, losses


def _fixed_loss(name, params):
  """The objective on the fixed batch with fixed noise and no dropout."""
  cfg = objectives.ObjectiveConfig(model=MODEL, name=name)
  return float(objectives.get_loss(name)(params, _batch(), key=jax.random.PRNGKey(9), step=10**6,
                                         cfg=cfg, deterministic=True)[0])


@pytest.fixture(scope="module")
def one_device_run():
  return _run(1)


@pytest.mark.parametrize("name", ["mim", "vae", "ae"])
def test_train_steps_lower_the_loss_on_a_fixed_batch(name, one_device_run):
  state, _ = one_device_run if name == "mim" else _run(1, name)
  initial = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  assert _fixed_loss(name, state.params) < _fixed_loss(name, initial) - 0.1


def test_one_device_equals_four_devices(one_device_run):
  assert len(jax.devices()) >= 4, "conftest should provide 4 fake CPU devices"
  state1, losses1 = one_device_run
  state4, losses4 = _run(4)
  np.testing.assert_allclose(losses1, losses4, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(state1.params),
                  jax.tree_util.tree_leaves(state4.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  assert int(state4.step) == 3
  assert state4.params["out"]["w"].sharding.is_fully_replicated


def test_non_finite_loss_leaves_the_state_unchanged():
  mesh = train_lib.make_mesh(1)
  cfg = objectives.ObjectiveConfig(model=MODEL, name="vae")
  opt = optim.make_optimizer("sgd", 5.0, 0.25)
  params = sentence_ae.init_params(jax.random.PRNGKey(0), MODEL)
  params["out"]["b"] = params["out"]["b"].at[3].set(jnp.nan)
  state = train_lib.replicate(train_lib.TrainState(jnp.asarray(0), params, opt.init(params)), mesh)
  before = jax.tree_util.tree_map(np.asarray, state)
  step_fn = train_lib.make_train_step(objectives.get_loss("vae"), opt, cfg, mesh)
  state, metrics = step_fn(state, train_lib.shard_batch(_batch(), mesh), jax.random.PRNGKey(0))
  assert float(metrics["finite"]) == 0.0
  assert int(state.step) == 0
  np.testing.assert_array_equal(state.params["encoder"]["w_h"], before.params["encoder"]["w_h"])


def test_sgd_clips_the_global_norm():
  opt = optim.make_optimizer("sgd", 1.0, 0.25)
  params = {"w": jnp.zeros(3)}
  updates, _ = opt.update({"w": jnp.array([3.0, 4.0, 0.0])}, opt.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.15, -0.2, 0.0], rtol=1e-6)


def test_learning_rate_can_be_changed_between_steps():
  opt = optim.make_optimizer("sgd", 1.0)
  state = optim.with_learning_rate(opt.init({"w": jnp.zeros(2)}), 0.25)
  assert optim.learning_rate(state) == 0.25
  updates, _ = opt.update({"w": jnp.ones(2)}, state)
  np.testing.assert_allclose(updates["w"], [-0.25, -0.25])


def test_plateau_schedule_reduces_after_patience_epochs():
  s = optim.PlateauSchedule(factor=0.25, patience=2)
  assert [s.update(v) for v in [5.0, 4.0, 4.5, 4.2, 3.0, 3.1, 3.2]] == [
      False, False, False, True, False, False, True]
  restored = optim.PlateauSchedule.from_state(0.25, 2, s.state())
  assert restored.best == 3.0 and restored.bad_epochs == 0


def test_batch_size_must_divide_devices():
  with pytest.raises(ValueError, match="batch_size=10.*divisible.*4"):
    train_lib.check_batch_size(10, train_lib.make_mesh(4))


@pytest.mark.parametrize("field,value,message", [
    ("objective.name", "vea", "objective.name"),
    ("model.floor_mode", "hard", "model.floor_mode"),
    ("batch_size", 0, "batch_size"),
    ("optimizer.name", "rmsprop", "optimizer.name"),
    ("max_epochs", -1, "max_epochs"),
])
def test_invalid_config_values_name_their_flag(field, value, message):
  config = config_lib.get_config()
  experiment.set_config_value(config, field, value)
  with pytest.raises(ValueError, match=r"--config\." + message.replace(".", r"\.")):
    experiment.validate_config(config)


def test_resume_refuses_another_model():
  config = config_lib.get_config()
  saved = config.to_dict()
  config.model.latent_dim = 16
  with pytest.raises(ValueError, match="model"):
    experiment.check_resumable_config(config, saved, "/some/dir")
  experiment.check_resumable_config(ml_collections.ConfigDict(saved), saved, "/some/dir")


def test_resume_accepts_a_run_saved_before_a_model_option_existed():
  """A config.json without a newer model field resumes when the field keeps its default."""
  config = config_lib.get_config()
  saved = config.to_dict()
  for field in ("init_scale", "encoder_reads_sos", "embed_dropout_scope"):
    del saved["model"][field]
  experiment.check_resumable_config(config, saved, "/some/dir")
  config.model.init_scale = 0.1
  with pytest.raises(ValueError, match="model"):
    experiment.check_resumable_config(config, saved, "/some/dir")
