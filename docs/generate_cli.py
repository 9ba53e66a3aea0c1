"""Writes docs/cli.md: the flags of every entry point and the fields of the experiment config.

  python docs/generate_cli.py           # (re)writes docs/cli.md
  python docs/generate_cli.py --check   # exits 1 (and says why) when docs/cli.md is stale

The entry points define absl flags with the same names (--workdir, --step, --seed, ...) in the one
global `absl.flags.FLAGS`, so they cannot all be imported into one ordinary process. One fresh
Python subprocess imports them in turn and, after reading the flags each one defined, deletes them
from `FLAGS` before importing the next (`_DUMP_FLAGS`). Nothing of the generator's own process (or
of a pytest session that imports `collect`) is touched.

The config fields, their defaults and one-line docs come from `mimtext.config.SECTIONS`
(`config.field_docs()`), where the `model` and `objective` blocks are the fields of the dataclasses
`sentence_ae.ModelConfig` and `objectives.ObjectiveConfig` (their `metadata["doc"]`). The `--config`
flag's row keeps the first line of its help; the rest of that help is the same field list.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import pathlib
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
CLI_MD = REPO / "docs" / "cli.md"
ENTRY_POINTS = ("launch.train", "launch.evaluate", "launch.generate", "launch.encode",
                "launch.reproduce")
# Flags every absl program takes (module absl.flags); listed once, in the page's introduction.
ABSL_BUILTIN_FLAGS = ("flagfile", "helpshort", "helpfull", "help", "undefok")
# Where a module's flags may be registered: the module itself, and launch.common for the
# `--config` flag that launch.train defines through `common.define_config_flag`.
_SHARED_MODULE = "launch.common"
_CONFIG_DEFAULT = "<config>"

# Run in a fresh interpreter: argv[1:] are module names; prints one JSON object.
_DUMP_FLAGS = r"""
import importlib, json, sys
from absl import flags
import ml_collections

FLAGS = flags.FLAGS
out = {}
for name in sys.argv[1:]:
  before = set(FLAGS)
  module = importlib.import_module(name)
  owned = []
  for owner in ("launch.common", name):
    owned += [f for f in FLAGS.get_flags_for_module(owner) if f.name not in before]
  rows = []
  for f in owned:
    default, text = f.default, f.help
    if isinstance(default, ml_collections.ConfigDict):
      default, text = "<config>", text.split("\n", 1)[0]  # the rest lists the fields
    elif not isinstance(default, (str, int, float, bool, type(None))):
      default = str(default)
    required = any("must have a value other than None" in str(getattr(v, "message", ""))
                   for v in f.validators)
    rows.append({"name": f.name, "type": f.flag_type(), "default": default, "help": text,
                 "required": required, "boolean": bool(f.boolean)})
  out[name] = {"doc": module.__doc__ or "", "flags": rows}
  for row in rows:  # the next entry point defines its own flags of the same names
    delattr(FLAGS, row["name"])
print("MIMTEXT_FLAGS_JSON=" + json.dumps(out))
"""


# --------------------------------------------------------------------------------- collecting


def entry_point_flags(modules=ENTRY_POINTS) -> dict[str, dict[str, Any]]:
  """{module: {"doc": docstring, "flags": [{name, type, default, help, required, boolean}]}}."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
             JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  proc = subprocess.run([sys.executable, "-c", _DUMP_FLAGS, *modules], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("MIMTEXT_FLAGS_JSON=")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"importing {', '.join(modules)} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  return json.loads(lines[-1].split("=", 1)[1])


def config_fields() -> list[dict[str, Any]]:
  """[{"field": dotted name, "default": value, "doc": str}] of config.get_config(), in the order
  of `config.SECTIONS`: the docs of `model` and `objective` are the dataclass fields'
  `metadata["doc"]`, the others config.py's tables (the text `launch.train --help` shows)."""
  sys.path.insert(0, str(REPO))
  try:
    from mimtext import config  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(str(REPO))
  return [{"field": name, "default": default, "doc": doc}
          for name, (default, doc) in config.field_docs().items()]


def collect() -> dict[str, Any]:
  """Everything docs/cli.md is made of."""
  return {"entry_points": entry_point_flags(), "config": config_fields()}


# --------------------------------------------------------------------------------- rendering


def _escape(text: str) -> str:
  """`<` and `>` as HTML entities outside `code spans` (Markdown would take `<unk>` for a tag)."""
  parts = re.split(r"(`[^`]*`)", text)
  return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;")
                 for p in parts)


def _cell(text: str) -> str:
  """One Markdown table cell: one line, pipes escaped, no raw `<`."""
  return _escape(" ".join(str(text).split())).replace("|", "\\|")


def _code(text: str) -> str:
  return f"``{text}``" if "`" in text else f"`{text}`"


def _flag_default(row: dict[str, Any]) -> str:
  if row["required"]:
    return "required"
  value = row["default"]
  if value == _CONFIG_DEFAULT:
    return "`mimtext/config.py`"
  if value is None:
    return "unset"
  if isinstance(value, str):
    return _code(value) if value else '`""`'
  return _code(repr(value))


def _config_default(value: Any) -> str:
  if isinstance(value, str):
    return _code(json.dumps(value))
  return _code(repr(value))


def _anchor(module: str) -> str:
  return module.replace(".", "")


def _summary_and_usage(doc: str) -> tuple[str, list[str]]:
  """The docstring's first paragraph (one line) and, when the second paragraph is a block of
  indented command lines, those lines."""
  paragraphs = [p for p in doc.strip("\n").split("\n\n") if p.strip()]
  summary = " ".join(paragraphs[0].split()) if paragraphs else ""
  usage = []
  if len(paragraphs) > 1 and paragraphs[1].lstrip().startswith("python -m"):
    usage = [line[2:] if line.startswith("  ") else line for line in paragraphs[1].splitlines()]
  return summary, usage


def render(data: dict[str, Any]) -> str:
  entry_points, fields = data["entry_points"], data["config"]
  out = [
      "# Command-line reference",
      "",
      "<!-- Generated by docs/generate_cli.py: do not edit by hand. -->",
      "",
      "Generated by `python docs/generate_cli.py` from the flags each entry point defines and "
      "from [`mimtext/config.py`](../mimtext/config.py); do not edit it by hand. "
      "`python docs/generate_cli.py --check` exits 1 when this page is stale, and "
      "[`tests/test_docs.py`](../tests/test_docs.py) runs that check.",
      "",
      "Every entry point also takes absl's own flags: `--flagfile=FILE` (more flags from a file, "
      "one per line, as in [`launch/configs/`](../launch/configs/)), `--helpshort` and "
      "`--helpfull`. Run from the repository root as `python -m launch.NAME`.",
      "",
  ]
  out += [f"- [`{m}`](#{_anchor(m)})" for m in entry_points]
  out += ["- [Experiment config (`--config.FIELD=VALUE`)](#experiment-config---configfieldvalue)",
          ""]
  for module, info in entry_points.items():
    summary, usage = _summary_and_usage(info["doc"])
    out += [f"## `{module}`", "", _escape(summary), ""]
    if usage:
      out += ["```", *usage, "```", ""]
    out += ["| flag | type | default | help |", "| --- | --- | --- | --- |"]
    for row in info["flags"]:
      out.append(f"| `--{row['name']}` | {row['type']} | {_flag_default(row)} | "
                 f"{_cell(row['help'])} |")
    out.append("")
  out += [
      "## Experiment config (`--config.FIELD=VALUE`)",
      "",
      "The fields of `mimtext/config.py`, which `launch.train` reads through `--config` "
      "(each `launch/configs/*.flags` file overrides some of them). Override any field as "
      "`--config.FIELD=VALUE`; `--max_steps`, `--max_epochs`, `--seed`, `--batch_size` and "
      "`--data_dir` are short forms of `max_steps`, `max_epochs`, `seed`, `batch_size` and "
      "`data.data_dir`. `launch.evaluate`, `launch.generate` and `launch.encode` take no "
      "`--config`: they read the run's saved `config.json`, with these defaults for any field it "
      "lacks. The doc column is the field's one-line doc, as `python -m launch.train --help` "
      "shows it: for `model` and `objective` the `metadata[\"doc\"]` of the fields of "
      "`sentence_ae.ModelConfig` and `objectives.ObjectiveConfig`, for the other blocks the "
      "tables of `config.py`.",
      "",
      "| field | default | doc |",
      "| --- | --- | --- |",
  ]
  for row in fields:
    out.append(f"| `--config.{row['field']}` | {_config_default(row['default'])} | "
               f"{_cell(row['doc'])} |")
  return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------- main


def stale_diff(expected: str, path: pathlib.Path = CLI_MD) -> str:
  """"" when `path` holds `expected`, else a unified diff (current → expected)."""
  current = path.read_text(encoding="utf-8") if path.exists() else ""
  if current == expected:
    return ""
  return "".join(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                      f"{path} (current)", f"{path} (generated)", n=1))


def check(data: dict[str, Any] | None = None, path: pathlib.Path = CLI_MD) -> int:
  """0 when `path` is what `data` (default: `collect()`) renders to; else 1, printing the diff."""
  diff = stale_diff(render(collect() if data is None else data), path)
  if diff:
    print(f"{path} is stale; regenerate it with `python docs/generate_cli.py`:\n{diff[:6000]}",
          file=sys.stderr)
    return 1
  print(f"{path} is up to date")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="exit 1 if docs/cli.md differs from what would be generated")
  args = parser.parse_args(argv)
  if args.check:
    return check()
  CLI_MD.write_text(render(collect()), encoding="utf-8")
  print(f"wrote {CLI_MD.relative_to(REPO)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
