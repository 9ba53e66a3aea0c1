"""The notebooks run top to bottom (their code cells, in order, at a few training steps).

Colab cells: a cell tagged "colab-only" (the install cell) may hold IPython magics (`%pip`,
`!pip`); here each magic line becomes `pass` at its indentation and the rest of the cell runs, so
its guard (`IN_COLAB = "google.colab" in sys.modules`, False here) is executed and checked: the
install never runs outside Colab. A magic line in any other cell fails the test (CI cannot run it).
The install line must be the one `mimtext.project` builds from the repository URL, the README
must have each notebook's Colab badge as built from it, and every other GitHub URL in the
notebooks, the README and docs/ (a markdown cell's link cannot be built) must name
`project.REPOSITORY`.
"""

import json
import logging as py_logging
import pathlib
import re

from absl import logging
import matplotlib
import pytest

from mimtext import config as config_lib
from mimtext import project

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
COLAB_ONLY = "colab-only"
_MAGIC = re.compile(r"^(\s*)[!%]")


def _quickstart_flags() -> dict[str, str]:
  """{field: value text} of the `--config.FIELD=VALUE` lines of launch/configs/quickstart.flags."""
  text = (REPO / "launch" / "configs" / "quickstart.flags").read_text(encoding="utf-8")
  return dict(line[len("--config."):].split("=", 1) for line in text.splitlines()
              if line.startswith("--config."))


def _same(value, text: str) -> bool:
  if isinstance(value, bool):
    return str(value).lower() == text.lower()
  if isinstance(value, (int, float)):
    return float(value) == float(text)
  return str(value) == text


def _check_quickstart(ns):
  test = ns["test"]
  assert ns["report"]["N"] == len(test.ids) == 1000
  assert 0.0 <= ns["report"]["bleu1"] <= 1.0 and "probe_accuracy" in ns["report"]
  assert len(ns["bounds"]["iw"]) == 3
  # The notebook trains with exactly the quickstart flagfile's settings (epochs sized by hardware).
  config, defaults = ns["config"], config_lib.get_config()
  for field, text in _quickstart_flags().items():
    if field == "max_epochs":
      continue
    value = config
    for part in field.split("."):
      value = value[part]
    assert _same(value, text), f"{field}: notebook {value!r}, quickstart.flags {text!r}"
  assert ns["MAX_EPOCHS"] == 8 and config.max_steps == 3  # CPU here; MIMTEXT_NOTEBOOK_STEPS
  assert config.batch_size != defaults.batch_size  # the overrides were applied


def _check_compose(ns):
  assert ns["step"] == 3
  assert ns["report"]["N"] == len(ns["test"].ids) == 1000
  assert 0.0 <= ns["classifier_accuracy"] <= 1.0 and "probe_accuracy" in ns["report"]


CHECKS = {"quickstart.ipynb": _check_quickstart, "compose_objective.ipynb": _check_compose}


def _cells(path):
  with open(path, encoding="utf-8") as f:
    notebook = json.load(f)
  return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def _runnable_source(cell, name: str) -> str:
  """The cell's code, with the magic lines of a colab-only cell replaced by `pass`."""
  lines = "".join(cell["source"]).splitlines()
  colab_only = COLAB_ONLY in cell.get("metadata", {}).get("tags", [])
  out = []
  for line in lines:
    match = _MAGIC.match(line)
    if match:
      assert colab_only, f"{name}: shell magic outside a {COLAB_ONLY!r} cell: {line!r}"
      line = match.group(1) + "pass  # " + line.strip()
    out.append(line)
  return "\n".join(out)


def test_every_notebook_has_a_check():
  assert sorted(p.name for p in NOTEBOOKS) == sorted(CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_install_cell_installs_this_repository_only_on_colab(path):
  first = _cells(path)[0]
  source = "".join(first["source"])
  assert COLAB_ONLY in first.get("metadata", {}).get("tags", [])
  assert 'IN_COLAB = "google.colab" in sys.modules' in source and "if IN_COLAB:" in source
  assert project.colab_install_command() in source, (
      f"{path.name}: the install line should be {project.colab_install_command()!r} "
      "(mimtext/project.py)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_has_each_notebooks_colab_badge(path):
  badge = project.colab_badge(f"notebooks/{path.name}")
  readme = (REPO / "README.md").read_text(encoding="utf-8")
  assert badge in readme, f"README.md should have {path.name}'s Colab badge, exactly: {badge}"


# A repository named in a URL: github.com/OWNER/NAME (a link, a clone or pip URL) or Colab's
# colab.research.google.com/github/OWNER/NAME/blob/...
_REPOSITORY_URL = re.compile(
    r"(?:https?://)?(?:www\.)?(?:github\.com|colab\.research\.google\.com/github)/"
    r"([A-Za-z0-9_.-]+/[A-Za-z0-9_-]+(?:\.(?!git\b)[A-Za-z0-9_-]+)*)")
_URL_PAGES = [*NOTEBOOKS, REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def repository_urls(text: str) -> list[str]:
  """The OWNER/NAME of every GitHub or Colab-from-GitHub URL in `text` (".git" left off)."""
  return _REPOSITORY_URL.findall(text)


def test_the_repository_url_check_can_fail():
  text = ("see https://github.com/mimtext/mimtext); pip install git+https://github.com/a/b.git@main"
          " [x](https://colab.research.google.com/github/c/d.e/blob/main/n.ipynb)")
  assert repository_urls(text) == ["mimtext/mimtext", "a/b", "c/d.e"]


@pytest.mark.parametrize("path", _URL_PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_repository_url_is_project_repository(path):
  """The markdown cells' and pages' copies of the URL (which cannot be built from
  mimtext/project.py) name `project.REPOSITORY` too."""
  other = [name for name in repository_urls(path.read_text(encoding="utf-8"))
           if name != project.REPOSITORY]
  assert not other, (f"{path.name} names the repository {sorted(set(other))}; it is "
                     f"{project.REPOSITORY!r} (mimtext/project.py)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
  matplotlib.use("Agg")
  monkeypatch.setenv("MIMTEXT_NOTEBOOK_STEPS", "3")
  namespace = {"__name__": "__notebook__"}
  verbosity = logging.get_verbosity()
  absl_logger = py_logging.getLogger("absl")
  filters = list(absl_logger.filters)
  try:
    for i, cell in enumerate(_cells(path)):
      name = f"{path.name}[code cell {i}]"
      exec(compile(_runnable_source(cell, name), name, "exec"), namespace)  # noqa: S102
  finally:  # the notebook's logging setup stays in the notebook
    logging.set_verbosity(verbosity)
    absl_logger.filters[:] = filters
  assert namespace.get("IN_COLAB") is False
  CHECKS[path.name](namespace)
