#!/usr/bin/env bash
# scripts/gpu-prep.sh: run HERE (the development machine) before a GPU run. Copies the header-only build
# dependencies the GPU machine may lack (doctest, zlib headers, stb) into .gpu-deps/include/ (git-ignored), and Fashion-MNIST,
# which the device run carries along; scripts/gpu-check.sh uses them only where the system lacks them.
#
# Layout: .gpu-deps/include/{doctest,stb}/...  and  .gpu-deps/include/zlib/{zlib.h,zconf.h}
# (zlib in its own folder so it is only put on the include path when the system has no zlib.h).
set -euo pipefail
cd "$(dirname "$0")/.."

dst=.gpu-deps/include
rm -rf .gpu-deps
mkdir -p "$dst/doctest" "$dst/stb" "$dst/zlib"

copy_one() {  # copy_one SRC DEST: fail loudly when a header is missing here
  if [ ! -f "$1" ]; then
    echo "gpu-prep: $1 not found (run scripts/install-deps.sh first)" >&2
    exit 1
  fi
  cp "$1" "$2"
}

copy_one /usr/include/doctest/doctest.h "$dst/doctest/"
copy_one /usr/include/zlib.h "$dst/zlib/"
copy_one /usr/include/zconf.h "$dst/zlib/"
if [ -d /usr/include/stb ]; then
  cp /usr/include/stb/*.h "$dst/stb/"
else
  echo "gpu-prep: /usr/include/stb not found (run scripts/install-deps.sh first)" >&2
  exit 1
fi

# Fashion-MNIST for the command-line smoke run on the GPU (about 30 MB), when installed here.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p .gpu-deps/fashion-mnist
  cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu-deps/fashion-mnist/
fi

git check-ignore -q .gpu-deps || echo "gpu-prep: warning: .gpu-deps is not git-ignored" >&2
echo "gpu-prep: $(find .gpu-deps -type f | wc -l) headers, $(du -sh .gpu-deps | cut -f1) in .gpu-deps/ (carry it: carry=[\".gpu-deps\"])"
