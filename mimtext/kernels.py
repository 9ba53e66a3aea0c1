"""Hand-differentiated hot paths of the training step: matmul, softmax cross-entropy, GRU scan.

Each function here computes exactly what a plain `jnp` composition computes (the tests compare
values and gradients with that composition, `tests/test_kernels.py`); what differs is how XLA is
asked to do it, for speed (benchmarks/README.md, "Where the time goes"):

* **Low-precision matmuls.** `dtype="bfloat16"` rounds both operands of a matmul to bfloat16 and
  accumulates in float32 (`preferred_element_type`); activations, gates, softmax and parameters
  stay float32 (mixed precision as in PyTorch's autocast). On CPUs with AMX or AVX512-BF16, on
  GPUs and TPUs this is several times faster: the PTB output projection [406, 512] × [512, 9972]
  takes 2.4 ms instead of 14 ms on the project's 2-core CPU.
* **Row-major transposes.** The weight gradient dW = Xᵀ G of y = X W contracts the row axis of
  both operands. XLA's CPU backend turns `X.T` into a layout change; its fast matmul (YNNPACK)
  takes only row-major operands, so that dot falls back to a slow loop (31 ms instead of 4 ms for
  the output layer; in bfloat16 there is no fallback kernel at all). `row_major_transpose` writes
  the transpose out as a gather, which XLA cannot turn into a layout.
* **Fused cross-entropy.** `linear_log_likelihood` computes log softmax(x W + b)[target] and its
  gradient (softmax − onehot) without a [n, v] log-probability array or a scatter.
* **GRU weight gradients out of the loop.** `gru_scan`'s backward pass runs only the [b, 3h] ×
  [3h, h] state gradient inside the time loop; the gradient of W_h is one [h, t·b] × [t·b, 3h]
  matmul after it (reverse-mode `lax.scan` would do a [h, b] × [b, 3h] matmul and a [h, 3h] add
  at every step).

Notation: n rows, k contraction, m output columns, t time, b batch, h hidden, v vocabulary.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

MATMUL_DTYPES = ("float32", "bfloat16")


def check_matmul_dtype(dtype: str) -> str:
  if dtype not in MATMUL_DTYPES:
    raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {dtype!r}")
  return dtype


def row_major_transpose(x: Array) -> Array:
  """xᵀ [k, n] of x [n, k], materialised in row-major order (see the module docstring).

  A gather of the flattened transpose: the values are those of `x.T`, but XLA must write them out
  instead of reinterpreting x's layout, so a following matmul gets a row-major operand.
  """
  n, k = x.shape
  return jnp.take(x.T.reshape(-1), jnp.arange(n * k)).reshape(k, n)


def _operand(x: Array, dtype: str) -> Array:
  """x rounded to the matmul operand dtype; unchanged for "float32" (float64 stays float64)."""
  return x if dtype == "float32" else x.astype(jnp.dtype(dtype))


def _accumulator(dtype: str):
  """The matmul result dtype: float32 for low-precision operands, else the operands' own."""
  return None if dtype == "float32" else jnp.float32


def _dot(x: Array, w: Array, dtype: str) -> Array:
  """x [n, k] @ w [k, m] → [n, m], operands rounded to `dtype`."""
  return jnp.dot(_operand(x, dtype), _operand(w, dtype), preferred_element_type=_accumulator(dtype))


def _dot_nt(g: Array, w: Array, dtype: str) -> Array:
  """g [n, m] @ w [k, m]ᵀ → [n, k] (contracts the last axis of both)."""
  return jax.lax.dot_general(_operand(g, dtype), _operand(w, dtype), (((1,), (1,)), ((), ())),
                             preferred_element_type=_accumulator(dtype))


def _dot_tn(x: Array, g: Array, dtype: str) -> Array:
  """x [n, k]ᵀ @ g [n, m] → [k, m], through `row_major_transpose`."""
  return jnp.dot(row_major_transpose(_operand(x, dtype)), _operand(g, dtype),
                 preferred_element_type=_accumulator(dtype))


# ----------------------------------------------------------------------------- matmul


def matmul(x: Array, w: Array, dtype: str = "float32") -> Array:
  """x [..., k] @ w [k, m] → [..., m] (float32), operands rounded to `dtype`.

  float32 is the plain `x @ w`. bfloat16 rounds both operands and accumulates in float32, with a
  backward pass of the same precision: dx = bf16(g) bf16(w)ᵀ, dw = bf16(x)ᵀ bf16(g), both
  accumulated in float32, so the gradients have the primal (float32) dtypes.
  """
  check_matmul_dtype(dtype)
  if dtype == "float32":
    return x @ w
  lead = x.shape[:-1]
  y = _low_precision_matmul(x.reshape(-1, x.shape[-1]), w, dtype)
  return y.reshape(lead + (w.shape[-1],))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_precision_matmul(x: Array, w: Array, dtype: str) -> Array:
  return _dot(x, w, dtype)


def _low_precision_matmul_fwd(x, w, dtype):
  return _dot(x, w, dtype), (x, w)


def _low_precision_matmul_bwd(dtype, residuals, g):
  x, w = residuals
  return _dot_nt(g, w, dtype), _dot_tn(x, g, dtype)


_low_precision_matmul.defvjp(_low_precision_matmul_fwd, _low_precision_matmul_bwd)


# ----------------------------------------------------------------------------- cross-entropy


def linear_log_likelihood(x: Array, w: Array, b: Array, targets: Array,
                          dtype: str = "float32") -> Array:
  """log softmax(x W + b)[target] per row: x [n, h], w [h, v], b [v], targets [n] int → [n].

  The logits are float32 whatever `dtype` (which rounds the matmul operands); the log-sum-exp is
  float32. The gradient with respect to the logits is g ⊙ (onehot(target) − softmax), formed once
  (in `dtype` for the two matmuls of the backward pass) from the saved logits.
  """
  check_matmul_dtype(dtype)
  return _linear_log_likelihood(x, w, b, targets, dtype)


def _logits_and_terms(x, w, b, targets, dtype):
  """(logits [n, v], log-sum-exp [n], target logit [n])."""
  product = _dot(x, w, dtype)
  logits = product + b
  lse = jax.nn.logsumexp(logits, axis=-1)
  # The target logit is gathered from the matmul's output, and b[target] added after: a gather
  # from `product + b` is fused with the broadcast add, and XLA's CPU backend then spends 14 ms
  # on it at [620, 9972] (the whole forward pass of the layer is otherwise 7 ms).
  picked = jnp.take_along_axis(product, targets[:, None], axis=-1)[:, 0] + b[targets]
  return logits, lse, picked


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _linear_log_likelihood(x, w, b, targets, dtype):
  _, lse, picked = _logits_and_terms(x, w, b, targets, dtype)
  return picked - lse


def _linear_log_likelihood_fwd(x, w, b, targets, dtype):
  w_low = _operand(w, dtype)                           # rounded once, reused by the backward pass
  logits, lse, picked = _logits_and_terms(x, w_low, b, targets, dtype)
  return picked - lse, (x, w_low, logits, lse, targets)


def _linear_log_likelihood_bwd(dtype, residuals, g):
  x, w, logits, lse, targets = residuals
  onehot = jnp.arange(logits.shape[-1])[None, :] == targets[:, None]
  d_logits = g[:, None] * (onehot.astype(logits.dtype) - jnp.exp(logits - lse[:, None]))
  d_logits = _operand(d_logits, dtype)
  d_x = _dot_nt(d_logits, w, dtype)
  d_w = _dot_tn(x, d_logits, dtype)
  d_b = jnp.sum(d_logits.astype(logits.dtype), axis=0)
  return d_x, d_w, d_b, None


_linear_log_likelihood.defvjp(_linear_log_likelihood_fwd, _linear_log_likelihood_bwd)


# ----------------------------------------------------------------------------- GRU


def gru_scan(w_h: Array, b_h: Array, x_proj: Array, mask: Array, h0: Array,
             dtype: str = "float32") -> tuple[Array, Array]:
  """The masked GRU recurrence over precomputed input projections, time-major.

  Args:
    w_h: [h, 3h], b_h: [3h] (gate order r, z, n; `nn` module docstring).
    x_proj: [t, b, 3h] = x W_i + b_i of every step.
    mask: [t, b] bool; a masked step keeps the state and outputs zeros.
    h0: [b, h].
    dtype: operand dtype of h W_h (accumulated in float32).

  Returns:
    (outputs [t, b, h], last state [b, h]); the same values as `lax.scan` over `nn.gru_cell`.
  """
  check_matmul_dtype(dtype)
  return _gru_scan(w_h, b_h, x_proj, mask, h0, dtype)


def _gru_gates(x_gates, hp, h):
  """r, z, n, h_n, h' of one step from x W_i + b_i (its r, z, n blocks, [b, h] each) and
  hp = h W_h + b_h ([b, 3h])."""
  x_r, x_z, x_n = x_gates
  h_r, h_z, h_n = jnp.split(hp, 3, axis=-1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * h_n)
  return r, z, n, h_n, (1.0 - z) * n + z * h


def _gru_forward(w_h, b_h, x_proj, mask, h0, dtype, save: bool):
  """(outputs [t,b,h], last [b,h], saved): saved = (h_prev, r, z, n, h_n), each [t,b,h], or None.

  The loop emits as few arrays as it can: on XLA's CPU backend every array a loop step writes out
  costs ~15-20 µs per step whatever its size (31 steps of a [20, 512] GRU: 0.4 ms with one
  output, 4.7 ms with eight; tanh of c·(i+1) + x as the i-th output). It writes the state after
  each step (and the gates r, z, n, h_n to save for the backward pass); the outputs and the
  previous states are formed from the states after it.
  """
  w_low = _operand(w_h, dtype)

  def step(h, inputs):
    *x_gates, m_t = inputs
    hp = _dot(h, w_low, dtype) + b_h
    r, z, n, h_n, h_new = _gru_gates(x_gates, hp, h)
    state = jnp.where(m_t[:, None], h_new, h)
    return state, (state, (r, z, n, h_n) if save else None)

  # The gate blocks of x W_i + b_i enter the loop as three arrays: slicing one [b, 3h] step inside
  # the gate fusion made XLA's CPU code 2.4x slower (8.5 vs 3.6 ms for 31 steps at b = 20, h = 512).
  x_gates = jnp.split(x_proj, 3, axis=-1)
  last, (states, gates) = jax.lax.scan(step, h0, (*x_gates, mask))
  outputs = jnp.where(mask[..., None], states, 0.0)
  if not save:
    return outputs, last, None
  h_prev = jnp.concatenate([h0[None], states[:-1]], axis=0)
  return outputs, last, (h_prev, *gates)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru_scan(w_h, b_h, x_proj, mask, h0, dtype):
  outputs, last, _ = _gru_forward(w_h, b_h, x_proj, mask, h0, dtype, save=False)
  return outputs, last


def _gru_scan_fwd(w_h, b_h, x_proj, mask, h0, dtype):
  outputs, last, saved = _gru_forward(w_h, b_h, x_proj, mask, h0, dtype, save=True)
  return (outputs, last), (w_h, mask, saved)


def _gru_scan_bwd(dtype, residuals, cotangents):
  w_h, mask, (h_prev, r, z, n, h_n) = residuals
  d_outputs, d_last = cotangents
  w_low = _operand(w_h, dtype)
  h = h_prev.shape[-1]

  def step(d_h, inputs):
    d_out, m_t, h_t, r_t, z_t, n_t, hn_t = inputs
    keep = m_t[:, None]
    d_new = jnp.where(keep, d_out + d_h, 0.0)          # cotangent of h' (used only where kept)
    d_prev = jnp.where(keep, 0.0, d_h) + d_new * z_t    # a masked step passes d_h through
    d_n = d_new * (1.0 - z_t)
    d_z = d_new * (h_t - n_t)
    d_an = d_n * (1.0 - n_t * n_t)
    d_ar = d_an * hn_t * r_t * (1.0 - r_t)
    d_az = d_z * z_t * (1.0 - z_t)
    d_hn = d_an * r_t
    d_prev = d_prev + _dot_nt(jnp.concatenate([d_ar, d_az, d_hn], axis=-1), w_low, dtype)
    return d_prev, (d_ar, d_az, d_an, d_hn)

  d_h0, (d_ar, d_az, d_an, d_hn) = jax.lax.scan(
      step, d_last, (d_outputs, mask, h_prev, r, z, n, h_n), reverse=True)
  d_hp = jnp.concatenate([d_ar, d_az, d_hn], axis=-1)          # ∂/∂(h W_h + b_h)
  d_x_proj = jnp.concatenate([d_ar, d_az, d_an], axis=-1)       # ∂/∂(x W_i + b_i)
  t, b, _ = h_prev.shape
  d_w_h = _dot_tn(h_prev.reshape(t * b, h), d_hp.reshape(t * b, 3 * h), dtype)
  d_b_h = jnp.sum(d_hp, axis=(0, 1))
  return d_w_h, d_b_h, d_x_proj, None, d_h0


_gru_scan.defvjp(_gru_scan_fwd, _gru_scan_bwd)
