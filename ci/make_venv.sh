#!/usr/bin/env bash
# Creates a virtual environment at $1 (default .venv) with the newest Python >= 3.11 found:
# python3.12 (or pyenv's 3.12.x, which a pyenv shim may hide), else python3.11, else python3.
set -euo pipefail
target=${1:-.venv}
candidates=(python3.12)
for dir in "$HOME"/.pyenv/versions/3.12*/bin; do [ -x "$dir/python3.12" ] && candidates+=("$dir/python3.12"); done
candidates+=(python3.11 python3)
for candidate in "${candidates[@]}"; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "creating $target with $("$candidate" --version)" >&2
    exec "$candidate" -m venv "$target"
  fi
done
echo "no Python >= 3.11 found" >&2
exit 1
