"""Where the project lives, in one place: the repository URL and what is built from it.

The notebooks' Colab install cells and the README's "Open in Colab" badges (one per notebook) are
generated from (and tested against, `tests/test_notebooks.py`) the values here; a URL that cannot
be built (a notebook's markdown link) is tested to name `REPOSITORY` too. Change the repository
here, then in the README and notebooks where that test points.

  >>> project.colab_badge("notebooks/quickstart.ipynb")
  '[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab...)'
"""

REPOSITORY = "mimtext/mimtext"          # GitHub owner/name
BRANCH = "main"
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"
# What `pip install` takes to install the package straight from the repository (no clone).
PIP_REQUIREMENT = f"mimtext @ git+{REPOSITORY_URL}.git@{BRANCH}"
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_url(notebook: str) -> str:
  """The Colab address that opens `notebook` (a path in the repository) from GitHub."""
  return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{notebook}"


def colab_badge(notebook: str = "notebooks/quickstart.ipynb") -> str:
  """The Markdown of an "Open In Colab" badge linking to `notebook`."""
  return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(notebook)})"


def colab_install_command() -> str:
  """The notebook line that installs the package on Colab (guarded there by `IN_COLAB`)."""
  return f'%pip install -q "{PIP_REQUIREMENT}"'
