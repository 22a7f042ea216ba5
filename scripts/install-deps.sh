#!/usr/bin/env bash
# scripts/install-deps.sh [PACKAGE...]: installs the Debian packages the build, tests, benches and demo
# need (or, given arguments, those packages instead: scripts/install-fuzz-deps.sh), only those that are
# missing. Safe to run repeatedly.
set -euo pipefail

# openmpi-bin libopenmpi-dev: `make MPI=1` and `mpirun -np N hamu ...` (README "Many processes").
packages=(g++ make zlib1g-dev libstb-dev doctest-dev libopenblas-dev dataset-fashion-mnist wordnet-base openmpi-bin libopenmpi-dev)
# python3-numpy: the Python ctypes example of libhamu (examples/python_numpy.py, run by make test).
packages+=(python3-numpy)
# librsvg2-bin: rsvg-convert, which renders every figure in make test (tests/svg_test.sh).
packages+=(librsvg2-bin)
if [ $# -gt 0 ]; then packages=("$@"); fi
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
  "${sudo_cmd[@]}" apt-get update >/dev/null
  "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
