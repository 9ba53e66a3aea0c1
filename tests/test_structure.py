"""Structure of the core: what imports what, the cell table, and the one owner of the decoder input.

- `mimtext.nn` and `mimtext.models` import nothing from `mimtext.data` (checked on the source with
  `ast`, and at run time in a fresh interpreter); the special-token ids live in the core module
  `mimtext.special_tokens`, which `mimtext.data.vocab` re-exports unchanged.
- No module of the library (`mimtext/**/*.py`) imports the launch scripts (`launch`): the
  experiment config the launch scripts and `mimtext.api` share is the library's `mimtext.config`.
- `nn.CELL_KINDS` covers every cell kind `ModelConfig` accepts, and nn.py dispatches on the kind
  through that table only (no comparisons with a kind's name).
- The decoder's input layout [embedding; z] has one owner (`sentence_ae.DecoderInput`): the
  step-wise decoder of `decoding` projects its input exactly as the teacher-forced decoder does.
"""

import ast
import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimtext import nn
from mimtext import special_tokens
from mimtext.models import decoding
from mimtext.models import sentence_ae

PACKAGE = pathlib.Path(nn.__file__).resolve().parent          # .../mimtext
CORE_FILES = sorted([PACKAGE / "nn.py", PACKAGE / "special_tokens.py",
                     *(PACKAGE / "models").glob("*.py")])
LIBRARY_FILES = sorted(PACKAGE.rglob("*.py"))


# ------------------------------------------------------------------------------------------------
# Imports.
# ------------------------------------------------------------------------------------------------


def _imported_modules(path: pathlib.Path, root: pathlib.Path = PACKAGE.parent) -> set[str]:
  """Every module an `import` / `from ... import` anywhere in the file names (relative ones
  resolved against the file's package under `root`), `from pkg import name` also as `pkg.name`."""
  package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
  names = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module
      names.add(module)
      names.update(f"{module}.{alias.name}" for alias in node.names)
  return names


def _is_data(module: str) -> bool:
  return module == "mimtext.data" or module.startswith("mimtext.data.")


def _is_launch(module: str) -> bool:
  return module == "launch" or module.startswith("launch.")


def test_core_files_found():
  names = {p.name for p in CORE_FILES}
  assert {"nn.py", "special_tokens.py", "sentence_ae.py", "decoding.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_nothing_from_data(path):
  bad = sorted(m for m in _imported_modules(path) if _is_data(m))
  assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"


def test_special_tokens_module_imports_no_mimtext_module():
  mods = _imported_modules(PACKAGE / "special_tokens.py")
  assert not [m for m in mods if m == "mimtext" or m.startswith("mimtext.")]


def test_import_check_sees_data_imports(tmp_path):
  """The checker itself: it catches absolute, `from mimtext import data` and relative imports."""
  probe = tmp_path / "mimtext" / "models" / "probe.py"
  probe.parent.mkdir(parents=True)
  probe.write_text("import mimtext.data.vocab\nfrom mimtext import data\n"
                   "from ..data import corpus\ndef f():\n  from mimtext.data.pipeline import x\n")
  found = {m for m in _imported_modules(probe, root=tmp_path) if _is_data(m)}
  assert found == {"mimtext.data.vocab", "mimtext.data", "mimtext.data.corpus",
                   "mimtext.data.pipeline", "mimtext.data.pipeline.x"}


def test_models_do_not_load_data_at_run_time():
  code = ("import sys; import mimtext.nn, mimtext.models.sentence_ae, mimtext.models.decoding; "
          "print(sorted(m for m in sys.modules if m.startswith('mimtext.data')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=PACKAGE.parent)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_library_files_found():
  names = {str(p.relative_to(PACKAGE)) for p in LIBRARY_FILES}
  assert {"api.py", "config.py", "experiment.py", "evaluation/runner.py"} <= names


def test_the_library_imports_nothing_from_launch():
  """Every import of every module under mimtext/, those inside functions included."""
  found = {str(p.relative_to(PACKAGE.parent)): sorted(m for m in _imported_modules(p)
                                                      if _is_launch(m))
           for p in LIBRARY_FILES}
  bad = {path: modules for path, modules in found.items() if modules}
  assert not bad, f"the library imports the launch scripts: {bad}"


def test_import_check_sees_launch_imports(tmp_path):
  """The checker itself: it catches `import launch...` and `from launch... import`, at the top
  level and inside a function."""
  probe = tmp_path / "mimtext" / "probe.py"
  probe.parent.mkdir(parents=True)
  probe.write_text("import launch.common\nfrom launch import train\n"
                   "def f():\n  from launch.configs import base\n  import launch\n")
  found = {m for m in _imported_modules(probe, root=tmp_path) if _is_launch(m)}
  assert found == {"launch", "launch.common", "launch.train", "launch.configs",
                   "launch.configs.base"}


def test_the_library_does_not_load_launch_at_run_time():
  code = ("import sys; import mimtext.api, mimtext.config, mimtext.evaluation.runner, "
          "mimtext.experiment, mimtext.train; "
          "print(sorted(m for m in sys.modules if m == 'launch' or m.startswith('launch.')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=PACKAGE.parent)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_vocab_reexports_the_core_ids():
  from mimtext import data
  from mimtext.data import vocab
  for name in ("PAD", "SOS", "EOS", "UNK", "PAD_ID", "SOS_ID", "EOS_ID", "UNK_ID",
               "SPECIAL_TOKENS"):
    assert getattr(vocab, name) == getattr(special_tokens, name), name
  for name in ("PAD_ID", "SOS_ID", "EOS_ID", "UNK_ID"):
    assert getattr(data, name) == getattr(special_tokens, name), name
  ids = (special_tokens.PAD_ID, special_tokens.SOS_ID, special_tokens.EOS_ID,
         special_tokens.UNK_ID)
  assert ids == (0, 1, 2, 3)
  assert [special_tokens.SPECIAL_TOKENS[i] for i in ids] == [
      special_tokens.PAD, special_tokens.SOS, special_tokens.EOS, special_tokens.UNK]
  vocabulary = vocab.Vocabulary(special_tokens.SPECIAL_TOKENS + ("w",))
  assert vocabulary.id("<unk>") == vocabulary.id("_UNK") == special_tokens.UNK_ID


# ------------------------------------------------------------------------------------------------
# The cell table.
# ------------------------------------------------------------------------------------------------

_CANDIDATE_CELLS = ("gru", "lstm", "GRU", "LSTM", "rnn", "rnn_tanh", "rnn_relu", "vanilla",
                    "transformer", "mlstm", "sru", "qrnn", "indrnn", "lstm ", "")


def _model_accepts(cell: str) -> bool:
  try:
    sentence_ae.ModelConfig(vocab_size=8, cell=cell)
  except ValueError:
    return False
  return True


def test_cell_table_covers_model_config():
  assert tuple(nn.CELLS) == tuple(nn.CELL_KINDS)
  accepted = {c for c in set(_CANDIDATE_CELLS) | set(nn.CELLS) if _model_accepts(c)}
  assert accepted, "ModelConfig accepts no cell at all"
  assert accepted <= set(nn.CELL_KINDS), f"no table entry for {accepted - set(nn.CELL_KINDS)}"
  default = next(f for f in dataclasses.fields(sentence_ae.ModelConfig) if f.name == "cell").default
  assert default in nn.CELL_KINDS
  # Every table entry is a usable kind: init, initial state, step and hidden agree on shapes.
  b, e, h = 2, 3, 4
  for name, kind in nn.CELL_KINDS.items():
    assert nn.cell_kind(name) is kind
    params = nn.init_rnn(jax.random.key(0), name, e, h)
    assert params["w_i"].shape == (e, kind.gates * h) and params["w_h"].shape == (h, kind.gates * h)
    state = nn.rnn_initial_state(name, jnp.ones((b, h)))
    x_proj = nn.rnn_input_projection(params, name, jnp.ones((b, e)))
    h_out, new_state = nn.rnn_step(params, name, x_proj, state)
    assert h_out.shape == (b, h)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


@pytest.mark.parametrize("cell", ["transformer", "LSTM", "rnn_tanh"])
def test_unknown_cell_one_line_error(cell):
  with pytest.raises(ValueError, match=r"unknown recurrent cell") as info:
    nn.cell_kind(cell)
  assert "\n" not in str(info.value)


def test_nn_dispatches_only_through_the_table():
  """No `cell == "gru"`-style comparison is left in nn.py: the kind is looked up in CELL_KINDS."""
  tree = ast.parse((PACKAGE / "nn.py").read_text(encoding="utf-8"))
  offending = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Compare):
      operands = [node.left, *node.comparators]
      if any(isinstance(o, ast.Constant) and o.value in nn.CELL_KINDS for o in operands):
        offending.append(node.lineno)
  assert not offending, f"nn.py compares with a cell name at lines {offending}"


# ------------------------------------------------------------------------------------------------
# The decoder input layout: one owner, used by the teacher-forced and the step-wise decoder.
# ------------------------------------------------------------------------------------------------

TINY = sentence_ae.ModelConfig(vocab_size=9, embed_dim=3, hidden_dim=4, latent_dim=2,
                               embed_dropout=0.0)


@pytest.mark.parametrize("cfg", [
    TINY,
    dataclasses.replace(TINY, cell="lstm", condition="concat", decoder_highway=1),
    dataclasses.replace(TINY, condition="init"),
], ids=["gru-both", "lstm-concat", "gru-init"])
def test_step_projection_equals_teacher_forced(cfg):
  params = sentence_ae.init_params(jax.random.key(1), cfg)
  b, t = 3, 5
  tokens = jax.random.randint(jax.random.key(2), (b, t), 0, cfg.vocab_size)
  tokens = tokens.at[:, 0].set(special_tokens.SOS_ID)
  lengths = jnp.full((b,), t, jnp.int32)
  z = jax.random.normal(jax.random.key(3), (b, cfg.latent_dim))

  # The owner: widths, weight blocks and concatenation agree with the decoder's weights.
  widths = sentence_ae.decoder_input_widths(cfg)
  blocks = sentence_ae.split_decoder_input_weights(params, cfg)
  w_i = params["decoder"]["w_i"]
  assert sentence_ae.decoder_input_dim(cfg) == w_i.shape[0]
  assert (blocks.z is None) == (not cfg.concat_z) == (widths.z is None)
  transposed = sentence_ae.DecoderInput(*(None if w is None else w.T for w in blocks))
  np.testing.assert_array_equal(sentence_ae.concat_decoder_input(transposed).T, w_i)

  # Teacher-forced input projection [embedding; z] W_i + b_i at every position.
  code = sentence_ae.decoder_code(params, z)
  emb = nn.embed(params["embed"], tokens[:, :-1])
  z_in = jnp.broadcast_to(code[:, None], emb.shape[:2] + code.shape[-1:]) if cfg.concat_z else None
  x_tf = sentence_ae.concat_decoder_input(sentence_ae.DecoderInput(emb, z_in))
  proj_tf = nn.rnn_input_projection(params["decoder"], cfg.cell, x_tf)        # [b, t-1, G·h]

  # Step-wise projection by the weight blocks, as `decoding` steps.
  stepper = decoding._prepare(params, z, cfg)
  proj_step = jnp.stack([decoding.step_input_projection(params, cfg, stepper, tokens[:, j])
                         for j in range(t - 1)], axis=1)
  np.testing.assert_allclose(proj_step, proj_tf, rtol=1e-5, atol=1e-5)

  # And the states they drive: stepping reproduces the teacher-forced decoder.
  hidden_tf = sentence_ae.decoder_hidden(params, z, tokens, lengths, cfg)
  state, hidden_step = stepper.state0, []
  for j in range(t - 1):
    hidden, _, state = decoding._step(params, cfg, stepper, tokens[:, j], state)
    hidden_step.append(hidden)
  np.testing.assert_allclose(jnp.stack(hidden_step, axis=1), hidden_tf, rtol=1e-5, atol=1e-5)
