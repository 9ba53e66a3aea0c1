"""Where the time of the sMIM PTB train step goes: nested ablations and the parts on their own.

Run from the repository root (see benchmarks/README.md, "Where the time goes"):

  $PY benchmarks/step_breakdown.py                      # batch 20, padded length 32, both dtypes
  $PY benchmarks/step_breakdown.py --length 48 --batch_size 64 --dtypes bfloat16

The model, objective, optimiser and data are those of `--flagfile` (default ptb_smim_128.flags),
built as `train_step_throughput.py` builds them; the batches are the first `--batches` of epoch 0
whose padded length is `--length`. Each row is the best of `--rounds` rounds of one pass over
those batches (ms per step), all rows interleaved round by round:

  forward            the loss alone (jit)
  + backward         value_and_grad of the loss
  + optimiser        and the clipped Adam update, applied unconditionally
  step (library)     `train.make_train_step`, what launch.train runs (finiteness test, lax.cond,
                     gradient norm, metrics)
  step, where guard  the same with the earlier guard: `where(finite, new, old)` over the state

and, at the same shapes, the parts alone (forward + backward): the decoder GRU (`kernels.gru_scan`
against autodiff through `lax.scan`), the output layer with its softmax cross-entropy
(`kernels.linear_log_likelihood` against log_softmax + take), and the clipped Adam update.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step_throughput as harness  # noqa: E402  (the shared config / data helpers)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  harness.add_config_args(p)
  p.add_argument("--length", type=int, default=32, help="the padded length of the timed batches")
  p.add_argument("--batches", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--dtypes", default="float32,bfloat16", help="model.matmul_dtype values to time")
  args = p.parse_args(argv)
  args.jax_platform = "cpu"
  return args


def _time_pass(fn, carry, batches):
  """(carry, seconds per batch, minor page faults per batch, system CPU seconds per batch) of one
  pass; `fn(carry, batch) -> (carry, out)`."""
  import jax
  before = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  out = None
  for batch in batches:
    carry, out = fn(carry, batch)
  jax.block_until_ready((carry, out))
  seconds = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_SELF)
  n = len(batches)
  return carry, seconds / n, (after.ru_minflt - before.ru_minflt) / n, (
      after.ru_stime - before.ru_stime) / n


def build_rows(config, vocab_size, batches):
  """{row name: (fn(carry, batch) -> (carry, out), initial carry)} for one config."""
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from mimtext import kernels, nn
  from mimtext import train as train_lib

  setup = train_lib.build_training_setup(config, vocab_size)
  mesh, cfg, loss_fn, opt = setup.mesh, setup.obj_cfg, setup.loss_fn, setup.optimizer
  model = setup.model_cfg
  key = train_lib.replicate(jax.random.PRNGKey(1), mesh)
  rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  loss = functools.partial(loss_fn, cfg=cfg)

  def ablation(kind):
    def step(state, batch, key):
      k = jax.random.fold_in(key, state.step)
      if kind == "forward":
        return state, loss(state.params, batch, key=k, step=state.step)[0]
      (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(
          state.params, batch, key=k, step=state.step)
      if kind == "backward":
        return state, (value, grads)
      updates, opt_state = opt.update(grads, state.opt_state, state.params)
      new = train_lib.TrainState(state.step + 1, optax.apply_updates(state.params, updates),
                                 opt_state)
      if kind == "optimiser":
        return new, value
      finite = train_lib._all_finite(value, grads, new.params)        # the earlier guard
      new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
      return new, dict(metrics, grad_norm=optax.tree.norm(grads), finite=finite)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,))

  library = setup.make_train_step()
  rows = {}
  for name, kind in (("forward", "forward"), ("+ backward", "backward"),
                     ("+ optimiser", "optimiser")):
    f = ablation(kind)
    rows[name] = (lambda st, b, f=f: f(st, b, key), "state")
  rows["step (library)"] = (lambda st, b: library(st, b, key), "state")
  guard = ablation("where")
  rows["step, where guard"] = (lambda st, b: guard(st, b, key), "state")

  # The parts alone, at the shapes of the decoder: b rows, t - 1 steps, its input and hidden sizes.
  b, t = batches[0]["tokens"].shape
  dec = setup.state.params["decoder"]
  x = jax.random.normal(jax.random.PRNGKey(2), (b, t - 1, dec["w_i"].shape[0]))
  mask = jnp.asarray(nn.sequence_mask(batches[0]["lengths"] - 1, t - 1))
  dtype = model.matmul_dtype

  def gru_loss(p, use_kernel):
    if use_kernel:
      out, _ = nn.gru(p, x, mask, matmul_dtype=dtype)
    else:
      x_proj = kernels.matmul(x, p["w_i"], dtype) + p["b_i"]
      step = lambda h, inp: (jnp.where(inp[1][:, None], nn.gru_cell(
          p, inp[0], h, matmul_dtype=dtype), h),) * 2
      _, out = jax.lax.scan(step, jnp.zeros((b, p["w_h"].shape[0])),
                            (jnp.swapaxes(x_proj, 0, 1), mask.T))
    return jnp.sum(out)

  out_p = setup.state.params["out"]
  hidden = jax.random.normal(jax.random.PRNGKey(3), (b * (t - 1), out_p["w"].shape[0]))
  targets = jnp.asarray(batches[0]["tokens"][:, 1:].reshape(-1))

  def head_loss(p, use_kernel):
    if use_kernel:
      return jnp.sum(kernels.linear_log_likelihood(hidden, p["w"], p["b"], targets, dtype))
    log_probs = jax.nn.log_softmax(nn.dense(p, hidden, matmul_dtype=dtype), axis=-1)
    return jnp.sum(jnp.take_along_axis(log_probs, targets[:, None], axis=-1))

  for name, f, params in (
      ("decoder GRU, kernels.gru_scan", functools.partial(gru_loss, use_kernel=True), dec),
      ("decoder GRU, autodiff lax.scan", functools.partial(gru_loss, use_kernel=False), dec),
      ("output layer, fused cross-entropy", functools.partial(head_loss, use_kernel=True), out_p),
      ("output layer, log_softmax + take", functools.partial(head_loss, use_kernel=False), out_p)):
    g = jax.jit(jax.grad(f))
    rows[name] = (lambda c, _b, g=g, params=params: (c, g(params)), None)

  grads = jax.tree_util.tree_map(jnp.ones_like, setup.state.params)

  # The gradients are an argument: closed over, they would be baked into the executable as
  # 11 M constants and the row would time that instead of the update.
  @functools.partial(jax.jit, donate_argnums=(0,))
  def adam(carry, grads):
    params, opt_state = carry
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rows["clipped Adam update alone"] = (lambda c, _b: (adam(c, grads), None), "params")
  return rows, setup, mesh


def main(argv=None):
  args = parse_args(argv)
  harness.configure_threads_and_platform(args)
  import jax
  import jax.numpy as jnp
  from mimtext import train as train_lib

  config, _, _ = harness.load_config(args)
  examples, vocab_size, source = harness.load_split_examples(args, config, "train")
  pipeline_args = argparse.Namespace(**dict(vars(args), steps=2000))
  batches = [b for b in harness.make_batches(examples, pipeline_args, config)
             if b["tokens"].shape[1] == args.length][:args.batches]
  if not batches:
    raise SystemExit(f"no batch of padded length {args.length} in epoch 0; try 16, 24, 32 or 48")
  print(harness.machine_line(harness.machine_info()))
  print(f"data: {source}; {len(batches)} batches of {config.batch_size} x {args.length} tokens, "
        f"{np.mean([harness.num_tokens(b) for b in batches]):.0f} target tokens per batch")
  results = {}
  for dtype in args.dtypes.split(","):
    config.model.matmul_dtype = dtype
    rows, setup, mesh = build_rows(config, vocab_size, batches)
    device_batches = [train_lib.shard_batch(b, mesh) for b in batches]
    carries = {}
    times = {name: [] for name in rows}
    for round_index in range(args.rounds + 1):          # round 0 compiles
      for name, (fn, carry_kind) in rows.items():
        if name not in carries:
          if carry_kind == "state":
            carries[name] = jax.tree_util.tree_map(jnp.copy, setup.state)
          elif carry_kind == "params":
            params = jax.tree_util.tree_map(jnp.copy, setup.state.params)
            carries[name] = (params, setup.optimizer.init(params))
          else:
            carries[name] = None
        carries[name], seconds, faults, system = _time_pass(fn, carries[name], device_batches)
        if round_index:
          times[name].append((seconds, faults, system))
    results[dtype] = {name: min(v) for name, v in times.items()}
  names = list(next(iter(results.values())))
  print(f"\nms per step, best of {args.rounds} rounds (batch {config.batch_size}, padded length "
        f"{args.length}); matmul dtype per column; then, for that round, the minor page faults "
        "and the system (kernel) CPU ms per step")
  print(f"  {'':36s}" + "".join(f"{d:>12s}{'faults':>9s}{'sys ms':>8s}" for d in results))
  for name in names:
    cells = (results[d][name] for d in results)        # (seconds, faults, system seconds)
    print(f"  {name:36s}" + "".join(f"{1e3 * sec:12.1f}{faults:9.0f}{1e3 * system:8.1f}"
                                    for sec, faults, system in cells))
  return results


if __name__ == "__main__":
  main()
