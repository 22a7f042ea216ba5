#!/usr/bin/env bash
# examples/run.sh: runs the embedding examples against a build (make test runs it after the unit tests):
# the C program always; the Python ctypes example where python3 and numpy are importable; the PyTorch
# example where torch is importable (each skipped with a notice otherwise).
# Usage: examples/run.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: examples/run.sh BUILD_DIR}
here=$(cd "$(dirname "$0")" && pwd)

"$build/examples/unlearn_mlp"
if ! command -v python3 >/dev/null 2>&1; then
  echo "examples: Python examples skipped: python3 is not installed"
  exit 0
fi
python3 "$here/python_numpy.py" "$build"
python3 "$here/pytorch_step.py" "$build"
