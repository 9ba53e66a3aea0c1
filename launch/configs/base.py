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
  # Stop after this many consecutive validations without a new best criterion (seed 003 §5.1: 3);
  # 0 = off. The count survives resume.
  c.early_stopping_patience = 0
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
  # Corpora without a train split (yahoo_topic, dbpedia here): train on `valid` minus a held-out
  # part of `holdout` sentences (a seeded shuffle) used for validation; `test` stays the test set.
  c.data.train_from_valid = False
  c.data.holdout = 1000
  c.data.min_count = 1
  c.data.max_vocab = 0         # 0 = no limit
  c.data.max_len = 100         # words per sentence (official sMIM code: 100); 0 = no limit
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
  c.model.cell = "gru"           # "gru" or "lstm"
  c.model.bidirectional = False  # bidirectional encoder
  c.model.summary = "last"       # encoder summary: "last", "mean" or "attention"
  c.model.attention_dim = 0      # 0 = the summary width
  c.model.encoder_highway = 0    # highway layers between the summary and the posterior head
  c.model.decoder_highway = 0    # highway layers on z before the decoder
  c.model.condition = "both"     # z as the decoder's "init" state, "concat" input, or "both"
  c.model.embed_dropout = 0.5
  c.model.output_dropout = 0.0   # dropout on decoder states before the softmax
  c.model.reverse_encoder_input = True
  c.model.encoder_reads_sos = False  # encoder reads `<sos> w…` (official sMIM code)
  c.model.embed_dropout_scope = "both"  # embedding dropout: "both" or "decoder" (official sMIM)
  c.model.posterior = "gaussian"  # "gaussian" or "hsvae" (Beta / spike-and-slab head)
  c.model.concentration_floor = 0.01  # HSVAE: Beta concentrations = floor + softplus(raw)
  c.model.log_var_floor = -10.0
  c.model.floor_mode = "clamp"  # "clamp" (as the original sMIM code), "softplus" or "none"
  c.model.log_var_init = "default"  # log-variance head at init: "default" (σ ≈ 1) or "floor"
  c.model.init_scale = 0.0     # 0 = PyTorch-style layer defaults; s > 0: every param ~ U(−s, s)

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "mim"     # "mim", "vae", "ae", "mi", "hsvae" or "matvae"
  c.objective.kl_weight = 1.0
  c.objective.kl_schedule = "constant"  # "constant", "linear" or "logistic"
  c.objective.kl_anneal_steps = 10_000
  c.objective.kl_logistic_k = 0.0025
  c.objective.kl_logistic_x0 = 2_500
  c.objective.free_bits = 0.0  # nats per latent dimension; 0 = off
  c.objective.num_samples = 1  # latent samples per sentence (seed 003)
  c.objective.sample_average = "loss"  # "loss" (Eq. 3) or "hidden" (AVG, Eq. 7-8)
  c.objective.word_keep_rate = 1.0      # decoder word keep rate (1 = no word dropout, 0 = inputless)
  c.objective.word_keep_schedule = "constant"  # or "linear" between the start/end below
  c.objective.word_keep_start_rate = 0.0
  c.objective.word_keep_end_rate = 1.0
  c.objective.word_keep_start_step = 2_000
  c.objective.word_keep_end_step = 20_000
  c.objective.l1_weight = 0.0  # L1 / L2 penalties on the posterior μ and σ (seed 004 baselines)
  c.objective.l2_weight = 0.0
  c.objective.mi_weight = 1.0  # λ of the mutual-information criterion (objective "mi")
  c.objective.mi_max_len = 40  # length of the sentences generated for L_MI
  c.objective.psi = 1.0        # HSVAE / MAT-VAE weight of the KL on z
  c.objective.lam = 1.0        # HSVAE weight of KL(Beta(a,b) ‖ Beta(α,β))
  c.objective.prior_alpha = 1.0
  c.objective.prior_beta = 1.0
  c.objective.concrete_temperature = 0.5
  c.objective.concrete_hard = True  # exact Bernoulli spike/slab choice forward, relaxed gradient
  c.objective.spike_scale = 0.05    # σ of the spike N(0, σ²) (the paper's σ → 0)
  c.objective.prior_gamma = 0.8     # MAT-VAE prior spike probability (prior sparsity)
  c.objective.mmd_weight = 1.0  # MAT-VAE λ of MMD(q(z), p(z))
  c.objective.mmd_kernel = "imq"
  c.objective.mim_batch_constant = False  # A-MIM: add log(B)/B as the official sMIM script

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"    # "adam" (lr 1e-3) or "sgd" (lr 5.0, clip 0.25), seed 000 §4.2
  c.optimizer.learning_rate = 1e-3
  c.optimizer.clip_norm = 0.0  # global-norm clipping; 0 = none
  c.optimizer.plateau_factor = 0.25
  c.optimizer.plateau_patience = 2  # validations without improvement before lr × factor

  c.eval = ml_collections.ConfigDict()
  c.eval.num_z_samples = 10    # z draws per sentence for the ELBO and MELBO
  c.eval.iw_samples = 10       # K of the importance-weighted bound (seed 003 Table 3: 500)
  c.eval.max_decode_len = 0    # 0 = longest sentence of the split + 5
  c.eval.max_valid_sentences = 0  # validate during training on the first N sentences (0 = all)
  return c


