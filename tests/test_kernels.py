"""kernels: hand-written gradients against autodiff of the plain composition, and bfloat16 runs.

Every kernel is compared with the `jnp` composition it replaces: float32 values and gradients to
float32 round-off, bfloat16 ones to the rounding of its operands. The bfloat16 model runs here also
guard against a CPU matmul without a bfloat16 kernel (XLA's fallback has none: it fails at run
time), for every cell and encoder the config allows, and a bounded training run shows the
bfloat16 loss curve within noise of float32.
"""

import functools

import jax
from jax import test_util as jax_test_util
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import kernels
from mimtext import nn
from mimtext import objectives
from mimtext import optim
from mimtext import train as train_lib
from mimtext.models import sentence_ae

N, K, M, V = 12, 10, 7, 23
B, T, E, H = 3, 6, 5, 4


def _rel(a, b) -> float:
  return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(a)), 1e-30))


def _assert_trees_close(want, got, rel: float):
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert _rel(a, b) < rel, (_rel(a, b), rel)


@pytest.fixture(scope="module")
def dense_inputs():
  ks = jax.random.split(jax.random.PRNGKey(0), 5)
  return {"x": jax.random.normal(ks[0], (N, K)), "w": jax.random.normal(ks[1], (K, M)),
          "w_out": 0.3 * jax.random.normal(ks[2], (K, V)), "b_out": jax.random.normal(ks[3], (V,)),
          "targets": jax.random.randint(ks[4], (N,), 0, V)}


def test_row_major_transpose_is_the_transpose(dense_inputs):
  x = dense_inputs["x"]
  np.testing.assert_array_equal(jax.jit(kernels.row_major_transpose)(x), x.T)


@pytest.mark.parametrize("dtype, rel", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_matmul_value_and_gradients(dense_inputs, dtype, rel):
  x, w = dense_inputs["x"], dense_inputs["w"]
  cot = jnp.cos(jnp.arange(N * M, dtype=jnp.float32)).reshape(N, M)
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w) * cot))
  want = jax.value_and_grad(loss(lambda x, w: x @ w), argnums=(0, 1))(x, w)
  got = jax.jit(jax.value_and_grad(loss(functools.partial(kernels.matmul, dtype=dtype)),
                                   argnums=(0, 1)))(x, w)
  _assert_trees_close(want, got, rel)


def test_matmul_keeps_leading_axes_and_float64():
  with jax.enable_x64(True):
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float64).reshape(2, 3, 4)
    w = jnp.ones((4, 5), jnp.float64)
    y = kernels.matmul(x, w)
    assert y.shape == (2, 3, 5) and y.dtype == jnp.float64


def test_matmul_rejects_an_unknown_dtype():
  with pytest.raises(ValueError, match="matmul_dtype must be one of"):
    kernels.matmul(jnp.ones((2, 2)), jnp.ones((2, 2)), "float16")


@pytest.mark.parametrize("dtype, rel", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_linear_log_likelihood_matches_log_softmax(dense_inputs, dtype, rel):
  d = dense_inputs
  weights = jnp.linspace(0.5, 1.5, N)

  def want_fn(x, w, b):
    log_probs = jax.nn.log_softmax(x @ w + b, axis=-1)
    return jnp.sum(weights * jnp.take_along_axis(log_probs, d["targets"][:, None], -1)[:, 0])

  def got_fn(x, w, b):
    return jnp.sum(weights * kernels.linear_log_likelihood(x, w, b, d["targets"], dtype))

  args = (d["x"], d["w_out"], d["b_out"])
  want = jax.value_and_grad(want_fn, argnums=(0, 1, 2))(*args)
  got = jax.jit(jax.value_and_grad(got_fn, argnums=(0, 1, 2)))(*args)
  _assert_trees_close(want, got, rel)


def test_linear_log_likelihood_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x, w, b = (jnp.asarray(rng.normal(size=s)) for s in ((4, 3), (3, 6), (6,)))
    targets = jnp.asarray([0, 5, 2, 2])
    f = lambda x, w, b: jnp.sum(kernels.linear_log_likelihood(x, w, b, targets))
    jax_test_util.check_grads(f, (x, w, b), order=1, modes=["rev"], eps=1e-6)


@pytest.fixture(scope="module")
def gru_inputs():
  ks = jax.random.split(jax.random.PRNGKey(1), 5)
  lengths = jnp.array([T, 2, 0])                        # full, short, empty rows
  return {"params": nn.init_gru(ks[0], E, H), "x": jax.random.normal(ks[1], (B, T, E)),
          "mask": nn.sequence_mask(lengths, T), "h0": 0.5 * jax.random.normal(ks[2], (B, H)),
          "cot": jax.random.normal(ks[3], (B, T, H)), "cot_last": jax.random.normal(ks[4], (B, H))}


def _scan_gru(params, x, mask, h0, reverse, dtype="float32"):
  """The masked GRU by autodiff through `lax.scan` over `nn.gru_cell`: the reference."""
  lengths = jnp.sum(mask, axis=1)
  if reverse:
    x = nn.reverse_padded(x, lengths)
  x_proj = x @ params["w_i"] + params["b_i"]

  def step(h, inputs):
    xp_t, m_t = inputs
    new = nn.gru_cell(params, xp_t, h, matmul_dtype=dtype)
    return jnp.where(m_t[:, None], new, h), jnp.where(m_t[:, None], new, 0.0)

  last, out = jax.lax.scan(step, h0, (jnp.swapaxes(x_proj, 0, 1), mask.T))
  out = jnp.swapaxes(out, 0, 1)
  return (nn.reverse_padded(out, lengths) if reverse else out), last


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_scan_values_and_gradients_match_autodiff_of_lax_scan(gru_inputs, reverse):
  g = gru_inputs

  def loss(run):
    def f(params, x, h0):
      out, last = run(params, x, g["mask"], h0)
      return jnp.sum(out * g["cot"]) + jnp.sum(last * g["cot_last"])
    return f

  fused = lambda p, x, m, h0: nn.gru(p, x, m, h0=h0, reverse=reverse)
  reference = lambda p, x, m, h0: _scan_gru(p, x, m, h0, reverse)
  args = (g["params"], g["x"], g["h0"])
  want = jax.value_and_grad(loss(reference), argnums=(0, 1, 2))(*args)
  got = jax.jit(jax.value_and_grad(loss(fused), argnums=(0, 1, 2)))(*args)
  _assert_trees_close(want, got, 1e-5)
  out, last = fused(g["params"], g["x"], g["mask"], g["h0"])
  np.testing.assert_array_equal(out[2], 0.0)                 # the empty row outputs zeros ...
  np.testing.assert_array_equal(last[2], g["h0"][2])         # ... and keeps its initial state


def test_gru_scan_under_vmap_matches_a_loop(gru_inputs):
  g = gru_inputs
  h0s = jnp.stack([g["h0"], -g["h0"]])
  f = lambda h0: jnp.sum(nn.gru(g["params"], g["x"], g["mask"], h0=h0)[0] * g["cot"])
  got = jax.vmap(jax.grad(f))(h0s)
  for i in range(2):
    np.testing.assert_allclose(got[i], jax.grad(f)(h0s[i]), rtol=1e-6, atol=1e-7)


def test_bfloat16_gru_stays_close_to_float32(gru_inputs):
  g = gru_inputs
  f = lambda dtype: jax.jit(jax.grad(lambda p: jnp.sum(
      nn.gru(p, g["x"], g["mask"], h0=g["h0"], matmul_dtype=dtype)[0] * g["cot"])))
  _assert_trees_close(f("float32")(g["params"]), f("bfloat16")(g["params"]), 3e-2)


# ----------------------------------------------------------------------------- the model in bf16

TINY = dict(vocab_size=30, embed_dim=8, hidden_dim=16, latent_dim=4, embed_dropout=0.1)


def _batch(rows=8, t=10, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, t + 1, size=rows).astype(np.int32)
  tokens = np.zeros((rows, t), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, 0], tokens[i, n - 1] = 1, 2
    tokens[i, 1:n - 1] = rng.integers(4, TINY["vocab_size"], size=n - 2)
  return {"tokens": tokens, "lengths": lengths, "index": np.arange(rows, dtype=np.int32),
          "valid": np.ones(rows, np.float32)}


def _losses(model: sentence_ae.ModelConfig, name: str, steps: int, batches,
            seed: int = 7) -> list[float]:
  mesh = train_lib.make_mesh(1)
  cfg = objectives.ObjectiveConfig(model=model, name=name)
  opt = optim.make_optimizer("adam", 3e-3, 1.0)
  params = sentence_ae.init_params(jax.random.PRNGKey(0), model)
  state = train_lib.replicate(train_lib.TrainState(jnp.asarray(0), params, opt.init(params)), mesh)
  step_fn = train_lib.make_train_step(objectives.get_loss(name), opt, cfg, mesh)
  losses = []
  for i in range(steps):
    state, metrics = step_fn(state, train_lib.shard_batch(batches[i % len(batches)], mesh),
                             jax.random.PRNGKey(seed))
    assert float(metrics["finite"]) == 1.0
    losses.append(float(metrics["loss"]))
  return losses


@pytest.mark.parametrize("variant, name", [
    (dict(cell="lstm"), "vae"),
    (dict(bidirectional=True, summary="mean"), "vae"),
    (dict(cell="lstm", bidirectional=True, summary="attention"), "mim"),
    (dict(condition="init", output_dropout=0.2), "mim"),
])
def test_bfloat16_model_variants_train(variant, name):
  model = sentence_ae.ModelConfig(**TINY, **variant, matmul_dtype="bfloat16")
  losses = _losses(model, name, 2, [_batch()])
  assert all(np.isfinite(losses))


def test_bfloat16_loss_curve_stays_within_noise_of_float32():
  """A bounded sMIM run (60 steps over 4 batches): the bfloat16 curve follows the float32 one.

  'Noise' is measured, not assumed: the spread between two float32 runs that differ only in
  their dropout masks (another seed); the bfloat16 curve must stay closer to float32 than that.
  """
  batches = [_batch(seed=s) for s in range(4)]
  f32 = np.array(_losses(sentence_ae.ModelConfig(**TINY), "mim", 60, batches))
  bf16 = np.array(_losses(sentence_ae.ModelConfig(**TINY, matmul_dtype="bfloat16"), "mim", 60,
                          batches))
  assert f32[-10:].mean() < f32[:10].mean() - 5.0         # the run learns
  other_seed = np.array(_losses(sentence_ae.ModelConfig(**TINY), "mim", 60, batches, seed=8))
  noise = np.abs(other_seed - f32)[10:].mean()
  assert np.abs(bf16 - f32)[10:].mean() < max(noise, 0.05 * np.abs(f32).mean())


def test_matmul_dtype_is_validated():
  with pytest.raises(ValueError, match="matmul_dtype"):
    sentence_ae.ModelConfig(**TINY, matmul_dtype="half")
