"""The README's Python code cannot drift: every ```python block marked `<!-- runnable -->` runs.

The blocks write to /tmp paths; each is run with those paths moved into a fresh temporary
directory, in a subprocess from the repository root (as a reader would run it).
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"<!-- runnable -->\s*```python\n(.*?)```", re.S)


def runnable_blocks() -> list[str]:
  return _BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_a_runnable_python_example():
  assert runnable_blocks(), "README.md lost its runnable Python example"


@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_readme_python_block_runs(index, tmp_path):
  code = runnable_blocks()[index].replace("/tmp/", f"{tmp_path}/")
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "MIMTEXT_TEST_JAX_CACHE", "/tmp/mimtext_test_jax_cache"))
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip(), "the example prints what it computed"
