"""What the launch scripts share: quieting the INFO chatter of the libraries underneath."""

import logging as py_logging

from absl import logging

_NOISY_PACKAGES = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/jax/_src/")


class _LibraryInfoFilter(py_logging.Filter):
  """Drops INFO records emitted from inside orbax / tfds / grain / jax; warnings always pass."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(p in record.pathname for p in _NOISY_PACKAGES)


def setup_logging(verbosity: int = logging.INFO) -> None:
  """Our own INFO lines (progress, validation, evaluation) stay; libraries' INFO lines go."""
  logging.set_verbosity(verbosity)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())
