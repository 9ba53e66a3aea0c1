"""The default experiment configuration; every `*.flags` file in this folder overrides it.

Run any experiment from the repository root:

  python -m launch.train --flagfile=launch/configs/NAME.flags --workdir=DIR [--config.FIELD=VALUE]

Every field below can be overridden on the command line as `--config.FIELD=VALUE` (e.g.
`--config.model.latent_dim=16`); the short flags `--max_steps`, `--max_epochs`, `--seed`,
`--batch_size` and `--data_dir` override the fields of the same name.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 20            # global batch (seed 000 §4.2); must divide by the device count
  c.eval_batch_size = 100
  c.max_epochs = 40            # 0 = no limit
  c.max_steps = 0              # 0 = no limit
  c.max_minutes = 0.0          # wall-clock budget of this invocation; 0 = no limit
  c.num_devices = 0            # 0 = every visible device
  c.log_every_steps = 100
  c.checkpoint_every_steps = 0  # 0 = only after each validation
  c.distributed = False        # call jax.distributed.initialize() (multi-host)

  c.data = ml_collections.ConfigDict()
  c.data.corpus = "builtin"    # "builtin" (the grammar corpus) or a folder name under MIMTEXT_DATA
  c.data.data_dir = ""         # a directory with train.txt / valid.txt / test.txt; overrides corpus
  c.data.tfds_dir = ""         # where TFDS prepares array_record files ("" = ~/.cache/mimtext/tfds)
  c.data.use_tfds = True
  c.data.vocab_split = "train"
  c.data.min_count = 1
  c.data.max_vocab = 0         # 0 = no limit
  c.data.max_len = 0           # words per sentence; 0 = no limit
  c.data.overflow = "drop"     # "drop" or "truncate" sentences longer than max_len
  c.data.blank_lines = "skip"  # "skip" (and count) or "error"
  c.data.bucket_batches = 50
  c.data.builtin_seed = 0      # the built-in grammar corpus: seed and sentences per split
  c.data.builtin_train_size = 10_000
  c.data.builtin_eval_size = 1_000

  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 300
  c.model.hidden_dim = 512
  c.model.latent_dim = 128
  c.model.embed_dropout = 0.5
  c.model.reverse_encoder_input = True
  c.model.log_var_floor = -10.0
  c.model.floor_mode = "clamp"  # "clamp" (as the original sMIM code), "softplus" or "none"

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "mim"     # "mim", "vae" or "ae"
  c.objective.kl_weight = 1.0
  c.objective.kl_schedule = "constant"  # "constant", "linear" or "logistic"
  c.objective.kl_anneal_steps = 10_000
  c.objective.kl_logistic_k = 0.0025
  c.objective.kl_logistic_x0 = 2_500

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"    # "adam" (lr 1e-3) or "sgd" (lr 5.0, clip 0.25), seed 000 §4.2
  c.optimizer.learning_rate = 1e-3
  c.optimizer.clip_norm = 0.0  # global-norm clipping; 0 = none
  c.optimizer.plateau_factor = 0.25
  c.optimizer.plateau_patience = 2  # validations without improvement before lr × factor

  c.eval = ml_collections.ConfigDict()
  c.eval.num_z_samples = 10    # z samples per sentence for the MELBO / importance-weighted bounds
  c.eval.max_decode_len = 0    # 0 = longest sentence of the split + 5
  return c


