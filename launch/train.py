r"""Trains a sentence autoencoder (sMIM, sVAE or AE) and checkpoints it.

  python -m launch.train --flagfile=launch/configs/quickstart.flags --workdir=/tmp/quickstart
  python -m launch.train --flagfile=launch/configs/ptb_smim_128.flags --workdir=W --max_steps=500

The experiment configuration is `mimtext/config.py`; a flagfile overrides fields of it and any
field can be overridden again with `--config.FIELD=VALUE`. Rerunning with the same --workdir resumes
from the latest checkpoint. Logic lives in `mimtext.train`.
"""

from absl import app
from absl import flags
from absl import logging

from launch import common
import jax
from mimtext import checkpoint as checkpoint_lib
from mimtext import config as config_lib
from mimtext import experiment
from mimtext import resources
from mimtext import run_control
from mimtext import train as train_lib

_CONFIG = common.define_config_flag(
    "config", config_lib.get_config(),
    config_lib.help_text("Experiment configuration (mimtext/config.py); a --flagfile overrides "
                         "fields of it, and so does --config.FIELD=VALUE."))
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and vocab.",
                               required=True)
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Parse and validate the config, print it and exit; writes nothing.")
# Short forms of the most used fields; when given they win over --config.*.
_SHORT_FLAGS = {
    "max_steps": flags.DEFINE_integer("max_steps", None, "Stop after this many steps (0: none)."),
    "max_epochs": flags.DEFINE_integer(
        "max_epochs", None, "Stop after this many epochs (0: none)."),
    "seed": flags.DEFINE_integer("seed", None, "Random seed (init, shuffling, sampling)."),
    "batch_size": flags.DEFINE_integer("batch_size", None, "Global batch size."),
    "data.data_dir": flags.DEFINE_string(
        "data_dir", None, "Directory holding train.txt / valid.txt / test.txt."),
}


def config_from_flags():
  """The config with the short flags applied, validated before any work is done."""
  config = _CONFIG.value
  with config.unlocked():
    for field, flag in _SHORT_FLAGS.items():
      if flag.value is not None:
        target = config
        *parents, leaf = field.split(".")
        for part in parents:
          target = target[part]
        target[leaf] = flag.value
  experiment.validate_config(config)
  # A model that cannot fit in memory is refused here too, under --dry_run and before the workdir
  # is created (a lower bound: the corpus is not read yet; training checks the full estimate).
  resources.check_config_fits(config)
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  allocator = common.prepare_host(
      common.host_allocator_mode(_CONFIG.value, _SHORT_FLAGS["data.data_dir"].value))
  common.setup_logging()
  try:
    config = config_from_flags()
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _DRY_RUN.value:  # validated above, as a real run would be; nothing is written
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    return
  # A missing split or a malformed corpus file fails here, before the workdir is created. (Not
  # under --dry_run: the flagfiles are checked where their corpora may be absent.)
  experiment.check_corpus_files(config)
  if config.distributed:
    jax.distributed.initialize()
  logging.info("devices: %s; processes: %d; host allocator: %s", jax.devices(),
               jax.process_count(), allocator)
  train_lib.train_and_evaluate(config, _WORKDIR.value)
  common.exit_cleanly_on_signals(f"training had finished and saved in {_WORKDIR.value}; exiting")


# A refused config or resume, a locked workdir, an unreadable checkpoint, a diverged or interrupted
# run: each message says what happened and what to do, so it is printed as one line.
TRAIN_ERRORS = common.USER_ERRORS + (
    experiment.ConfigError, checkpoint_lib.CheckpointError, run_control.WorkdirLockedError,
    run_control.WorkdirError,
    train_lib.NonFiniteLossError, run_control.TrainingInterrupted)


if __name__ == "__main__":
  common.run(main, TRAIN_ERRORS)
