"""One process of the 2-process data-parallel check in test_multihost.py (not a test module).

Usage: python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON. With 2 processes
each holds 2 of the 4 CPU devices and loads its own half of every global batch; process 0 writes
the losses and a parameter checksum.
"""

import json
import sys

import jax

pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
jax.config.update("jax_num_cpu_devices", 4 // nproc)
if nproc > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np

from mimtext import objectives
from mimtext import train as train_lib
from mimtext.data import corpus as corpus_lib
from mimtext.data import pipeline as pipeline_lib
from mimtext.models import sentence_ae
corpus = corpus_lib.load_corpus(None, builtin_sizes={"train": 64, "valid": 8, "test": 8})
model = sentence_ae.ModelConfig(vocab_size=corpus.vocab.size, embed_dim=8, hidden_dim=16,
                                latent_dim=4)
cfg = objectives.ObjectiveConfig(model=model, name="vae")
mesh = train_lib.make_mesh()
opt = train_lib.make_optimizer("adam", 1e-2)
params = sentence_ae.init_params(jax.random.PRNGKey(0), model)
state = train_lib.replicate(train_lib.TrainState(jnp.asarray(0), params, opt.init(params)), mesh)
step = train_lib.make_train_step(objectives.get_loss("vae"), opt, cfg, mesh)
pipe = pipeline_lib.BatchPipeline(corpus.splits["train"].ids, global_batch_size=16, seed=0,
                                  shuffle=True, drop_remainder=False,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
losses = []
for batch in pipe.epoch(0):
  state, m = step(state, train_lib.shard_batch(batch, mesh), jax.random.PRNGKey(1))
  losses.append(float(m["loss"]))
w = state.params["out"]["w"]
if nproc > 1:
  w = jax.experimental.multihost_utils.process_allgather(w, tiled=True)
if jax.process_index() == 0:
  with open(out, "w", encoding="utf-8") as f:
    json.dump({"losses": losses, "w_abs_sum": float(np.abs(np.asarray(w)).sum()),
               "devices": jax.device_count(), "processes": jax.process_count()}, f)
