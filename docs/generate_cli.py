"""Writes docs/cli.md: the flags of every entry point and the fields of the experiment config.

  python docs/generate_cli.py           # (re)writes docs/cli.md
  python docs/generate_cli.py --check   # exits 1 (and says why) when docs/cli.md is stale

The entry points define absl flags with the same names (--workdir, --step, --seed, ...) in the one
global `absl.flags.FLAGS`, so they cannot all be imported into one ordinary process. One fresh
Python subprocess imports them in turn and, after reading the flags each one defined, deletes them
from `FLAGS` before importing the next (`_DUMP_FLAGS`). Nothing of the generator's own process (or
of a pytest session that imports `collect`) is touched.

The config fields come from `launch.configs.base.get_config()` (names and defaults) and from the
source of `launch/configs/base.py` (comments): the comment at the end of a field's line, else the
block of whole-line comments directly above it.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import json
import math
import os
import re
import pathlib
import subprocess
import sys
import tokenize
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
CLI_MD = REPO / "docs" / "cli.md"
BASE_PY = REPO / "launch" / "configs" / "base.py"
ENTRY_POINTS = ("launch.train", "launch.evaluate", "launch.generate", "launch.encode")
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
    default = f.default
    if isinstance(default, ml_collections.ConfigDict):
      default = "<config>"
    elif not isinstance(default, (str, int, float, bool, type(None))):
      default = str(default)
    required = any("must have a value other than None" in str(getattr(v, "message", ""))
                   for v in f.validators)
    rows.append({"name": f.name, "type": f.flag_type(), "default": default, "help": f.help,
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


def _comments_by_line(source: str) -> dict[int, str]:
  """Line number → the text of the comment on that line (without '#')."""
  out = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      out[tok.start[0]] = tok.string.lstrip("#").strip()
  return out


def _dotted_target(node: ast.expr) -> str | None:
  """`c.data.max_len` → "data.max_len"; None for anything else."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name) and node.id == "c" and parts:
    return ".".join(reversed(parts))
  return None


def config_comments(path: pathlib.Path = BASE_PY) -> dict[str, tuple[int, str]]:
  """Dotted field → (line of its assignment, its comment) in base.py. The comment is the
  end-of-line comment of the assignment, else the whole-line comments directly above it (joined),
  else ""."""
  source = path.read_text(encoding="utf-8")
  lines = source.splitlines()
  comments = _comments_by_line(source)
  out = {}
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
      continue
    field = _dotted_target(node.targets[0])
    if field is None:
      continue
    inline = comments.get(node.end_lineno)
    if inline is not None and not lines[node.end_lineno - 1].lstrip().startswith("#"):
      out[field] = (node.lineno, inline)
      continue
    block, number = [], node.lineno - 1
    while number >= 1 and lines[number - 1].lstrip().startswith("#"):
      block.append(comments[number])
      number -= 1
    out[field] = (node.lineno, " ".join(reversed(block)))
  return out


def config_fields() -> list[dict[str, Any]]:
  """[{"field": dotted name, "default": value, "comment": str}] of base.get_config(), in the order
  of base.py's source (a field set nowhere in it, if any, last)."""
  sys.path.insert(0, str(REPO))
  try:
    from launch.configs import base  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(str(REPO))
  comments = config_comments()
  rows = []

  def walk(prefix, block):
    for key, value in block.items():
      name = f"{prefix}{key}"
      if hasattr(value, "items"):
        walk(name + ".", value)
      else:
        line, comment = comments.get(name, (math.inf, ""))
        rows.append({"field": name, "default": value, "comment": comment, "line": line})

  walk("", base.get_config())
  rows.sort(key=lambda row: row.pop("line"))
  return rows


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
    return "`launch/configs/base.py`"
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
      "from [`launch/configs/base.py`](../launch/configs/base.py); do not edit it by hand. "
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
      "The fields of `launch/configs/base.py`, which `launch.train` reads through `--config` "
      "(each `launch/configs/*.flags` file overrides some of them). Override any field as "
      "`--config.FIELD=VALUE`; `--max_steps`, `--max_epochs`, `--seed`, `--batch_size` and "
      "`--data_dir` are short forms of `max_steps`, `max_epochs`, `seed`, `batch_size` and "
      "`data.data_dir`. `launch.evaluate`, `launch.generate` and `launch.encode` take no "
      "`--config`: they read the run's saved `config.json`, with these defaults for any field it "
      "lacks. The comment column is the field's comment in `base.py`.",
      "",
      "| field | default | comment |",
      "| --- | --- | --- |",
  ]
  for row in fields:
    out.append(f"| `--config.{row['field']}` | {_config_default(row['default'])} | "
               f"{_cell(row['comment'])} |")
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
