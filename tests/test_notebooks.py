"""The notebooks run top to bottom (their code cells, in order, at a few training steps)."""

import json
import pathlib

import matplotlib
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
  matplotlib.use("Agg")
  monkeypatch.setenv("MIMTEXT_NOTEBOOK_STEPS", "3")
  with open(path, encoding="utf-8") as f:
    notebook = json.load(f)
  namespace = {"__name__": "__notebook__"}
  for i, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] != "code":
      continue
    source = "".join(cell["source"])
    assert not source.lstrip().startswith(("!", "%")), f"cell {i}: shell magics cannot be tested"
    exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102
  assert "report" in namespace and namespace["report"]["N"] == 300
