"""The pages under docs/ stay true to the code.

- docs/cli.md is what docs/generate_cli.py generates from the entry points' flags and from
  mimtext/config.py (the `--check` of the generator);
- every relative link in docs/*.md points to an existing file (and heading, for a `#anchor` into a
  Markdown page);
- every `--config.FIELD` a page names is a field of the config, and every `--flag` is a flag of the
  entry points (of the very entry point, in a `launch.X ...` command line), an absl flag, or one of
  the few flags of other programs the pages quote (`EXTERNAL_FLAGS`);
- the text-preparation snippet of docs/corpus.md does what the page says.

The entry points' flags are read once per session (one subprocess, about 3-5 s).
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Flags of other programs that the pages quote (gcloud, sbatch / srun). Hyphenated flags such as
# --ntasks-per-node are never mimtext flags and are not checked.
EXTERNAL_FLAGS = frozenset({"zone", "worker", "command", "recurse", "nodes", "time",
                            "check"})  # the last: docs/generate_cli.py --check


def _load_generator():
  spec = importlib.util.spec_from_file_location("docs_generate_cli", DOCS / "generate_cli.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


GEN = _load_generator()


@pytest.fixture(scope="module")
def collected():
  return GEN.collect()


# ------------------------------------------------------------------------------- cli.md


def test_cli_md_is_up_to_date(collected):
  assert GEN.check(collected) == 0, (
      "docs/cli.md is stale: run `python docs/generate_cli.py` (the diff is printed above)")


def test_the_check_fails_on_a_stale_or_missing_file(collected, tmp_path):
  page = tmp_path / "cli.md"
  page.write_text(GEN.render(collected), encoding="utf-8")
  assert GEN.stale_diff(GEN.render(collected), page) == ""
  page.write_text(GEN.render(collected).replace("| `--workdir` |", "| `--work_dir` |", 1),
                  encoding="utf-8")
  assert "--work_dir" in GEN.stale_diff(GEN.render(collected), page)
  assert GEN.check(collected, page) == 1
  assert GEN.stale_diff("x\n", tmp_path / "absent.md") != ""


def test_the_reference_lists_every_entry_point_and_config_field(collected):
  assert list(collected["entry_points"]) == list(GEN.ENTRY_POINTS)
  train = {row["name"]: row for row in collected["entry_points"]["launch.train"]["flags"]}
  assert {"config", "workdir", "data_dir", "batch_size", "dry_run"} <= set(train)
  assert train["workdir"]["required"] and not train["dry_run"]["required"]
  fields = {row["field"]: row for row in collected["config"]}
  assert fields["data.max_len"]["default"] == 100
  assert "Words per sentence" in fields["data.max_len"]["doc"]  # config.py's table
  assert "consecutive validations" in fields["early_stopping_patience"]["doc"]
  assert "seed 004 Eq. 2" in fields["objective.kl_z_weight"]["doc"]  # the dataclass field's doc
  assert [r["field"] for r in collected["config"]][:2] == ["seed", "batch_size"]  # source order
  # The --config row keeps the first line of the flag's help; the field list is the config table.
  assert "\n" not in train["config"]["help"] and "model.latent_dim" not in train["config"]["help"]


# ------------------------------------------------------------------------------- links


def _without_code(text: str) -> str:
  """The text with fenced code blocks and inline code spans blanked out."""
  text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
  return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: pathlib.Path) -> set[str]:
  text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
  seen: dict[str, int] = {}
  out = set()
  for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
    slug = _slug(heading)
    out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
    seen[slug] = seen.get(slug, 0) + 1
  return out


def _links(page: pathlib.Path) -> list[str]:
  return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)",
                    _without_code(page.read_text(encoding="utf-8")))


def test_the_pages_exist():
  names = {p.name for p in PAGES}
  assert {"README.md", "corpus.md", "metrics.md", "cli.md", "distributed.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_an_existing_file(page):
  bad = []
  for target in _links(page):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
      continue
    path_part, _, anchor = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    if not resolved.exists():
      bad.append(f"{target} (no file {resolved})")
    elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
      bad.append(f"{target} (no heading #{anchor} in {resolved.name})")
  assert not bad, f"{page.name}: broken links: {bad}"


def test_the_readme_links_every_page_and_its_links_resolve():
  readme = REPO / "README.md"
  links = _links(readme)
  for page in ("corpus.md", "cli.md", "distributed.md", "metrics.md"):
    assert f"docs/{page}" in links, f"README.md does not link docs/{page}"
  bad = [target for target in links
         if not re.match(r"^[a-z][a-z0-9+.-]*:", target)
         and not (REPO / target.partition("#")[0]).exists()]
  assert not bad, f"README.md: broken links: {bad}"


def test_the_link_check_can_fail(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("# Title\n\n[ok](page.md#title) [gone](missing.md) [bad](#nowhere) "
                  "`[code](ignored.md)`\n", encoding="utf-8")
  assert _links(page) == ["page.md#title", "missing.md", "#nowhere"]
  assert _anchors(page) == {"title"}


# ------------------------------------------------------------------------------- flag names

_FLAG = re.compile(r"(?<![\w./-])--([A-Za-z0-9_][A-Za-z0-9_.-]*)")
_COMMAND = re.compile(r"\blaunch\.(train|evaluate|generate|encode)\b")


def _flag_names(text: str) -> list[str]:
  return [m.rstrip(".") for m in _FLAG.findall(text)]


def _commands(text: str) -> list[tuple[str, str]]:
  """(module, the rest of its command) for every `launch.X ...` command line of the text: in
  fenced code (continuation lines joined) and in inline code spans, cut at `&&`."""
  pieces = []
  for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
    pieces += block.replace("\\\n", " ").splitlines()
  pieces += re.findall(r"`([^`\n]+)`", _without_fences(text))
  out = []
  for piece in pieces:
    for segment in piece.split("&&"):
      match = _COMMAND.search(segment)
      if match and not segment[match.end():].startswith((".py", "/")):
        out.append((f"launch.{match.group(1)}", segment[match.end():]))
  return out


def _without_fences(text: str) -> str:
  return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _check_names(text: str, config_fields: set[str], flags_by_module: dict[str, set[str]]
                 ) -> list[str]:
  """The unknown names in `text` (empty when every flag and field it names exists)."""
  known = set().union(*flags_by_module.values()) | set(GEN.ABSL_BUILTIN_FLAGS) | EXTERNAL_FLAGS
  bad = []
  for name in _flag_names(text):
    if name.startswith("config."):
      field = name[len("config."):]
      if field.islower() and field not in config_fields:  # FIELD, X: placeholders
        bad.append(f"--{name}")
    elif "-" in name:
      continue
    elif name not in known and not (name.startswith("no") and name[2:] in known):
      bad.append(f"--{name}")
  for module, rest in _commands(text):
    allowed = flags_by_module[module] | set(GEN.ABSL_BUILTIN_FLAGS)
    for name in _flag_names(rest):
      base = name.split(".")[0]
      if "-" not in name and base not in allowed and not (
          name.startswith("no") and name[2:] in allowed):
        bad.append(f"--{name} (not a flag of {module})")
  return bad


@pytest.fixture(scope="module")
def names(collected):
  fields = {row["field"] for row in collected["config"]}
  flags = {module: {row["name"] for row in info["flags"]}
           for module, info in collected["entry_points"].items()}
  return fields, flags


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_named_flag_and_config_field_exists(page, names):
  bad = _check_names(page.read_text(encoding="utf-8"), *names)
  assert not bad, f"{page.name} names flags or fields that do not exist: {sorted(set(bad))}"


def test_the_name_check_can_fail(names):
  text = ("Use `--config.data.max_len=5`, `--config.FIELD=V`, `--noplot`, `--ntasks-per-node=4`.\n"
          "Wrong: `--config.data.lowercase=True` and `--no_such_flag`.\n"
          "```bash\npython -m launch.encode --workdir=W \\\n    --input=a.txt --suite=all\n```\n")
  assert sorted(_check_names(text, *names)) == [
      "--config.data.lowercase", "--no_such_flag", "--suite (not a flag of launch.encode)"]


# ------------------------------------------------------------------------------- corpus.md


def test_the_text_preparation_snippet_does_what_the_page_says():
  text = (DOCS / "corpus.md").read_text(encoding="utf-8")
  blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
  assert len(blocks) == 1
  namespace = {"__name__": "prepare_text"}
  exec(compile(blocks[0], "corpus.md snippet", "exec"), namespace)  # pylint: disable=exec-used
  prepare = namespace["prepare"]
  example = re.search(r'`prepare\("(.+?)", "lower_punct"\)` returns\s+`"(.+?)"`', text)
  assert example, "the worked example of corpus.md is gone"
  assert prepare(example.group(1), "lower_punct") == example.group(2)
  assert prepare("  The\u00a0Cat\tSAT \r\n", "lower") == "the cat sat"
  assert prepare("state-of-the-art, don't", "lower_punct") == "state-of-the-art , don't"
  with pytest.raises(ValueError):
    prepare("x", "upper")


def test_the_builtin_entropy_quoted_in_metrics_md():
  from mimtext.data import grammar  # pylint: disable=g-import-not-at-top
  text = (DOCS / "metrics.md").read_text(encoding="utf-8")
  quoted = re.search(r"of ([\d.]+) ± ([\d.]+) nats\s+per sentence", text)
  assert quoted, "the true-entropy sentence of metrics.md is gone"
  test = grammar.builtin_corpus(seed=0, sizes={"test": 1000})["test"]  # the default test split
  estimate = grammar.entropy_per_sentence(test.log_probs)
  assert (f"{estimate.nats:.1f}", f"{estimate.stderr:.1f}") == quoted.groups()
  assert f"log N = {math.log(len(test.log_probs)):.1f} nats" in text


def test_the_post_hoc_bound_is_described_in_the_same_words_in_reports_and_docs():
  from mimtext.evaluation import runner  # pylint: disable=g-import-not-at-top
  text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
  assert runner.POSTHOC_BOUND_MEANING in " ".join(text.split())
