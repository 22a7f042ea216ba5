#!/usr/bin/env bash
# scripts/install-fuzz-deps.sh: what `make fuzz` needs beyond the normal build: clang and its runtime
# libraries (libFuzzer, ASan, UBSan). Only missing packages are installed; safe to run repeatedly.
set -euo pipefail
exec "$(dirname "$0")/install-deps.sh" clang libclang-rt-dev libomp-dev
