#!/usr/bin/env bash
# tests/svg_test.sh: every figure hamu draws renders. Renders SVG files to PNG with rsvg-convert (Debian
# librsvg2-bin, installed by scripts/install-deps.sh) and fails on a render error or warning, an empty
# image or a file that is not a PNG.
#
# Run:   tests/svg_test.sh [--tests path/to/hamu_tests] [FILE.svg ...]
#        --tests: also draws the figure tests' SVGs (the demo's compare.json and hardness.json, random
#                 data: tests/test_plots.cpp) and renders them. SVG_TEST_KEEP=DIR keeps the PNGs there.
set -u

command -v rsvg-convert > /dev/null || {
  echo "svg_test: rsvg-convert not found (Debian package librsvg2-bin; scripts/install-deps.sh installs it)" >&2
  exit 1
}
WORK=$(mktemp -d /tmp/hamu_svg_test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

files=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --tests)
      mkdir -p "$WORK/figures"
      if ! HAMU_SVG_OUT="$WORK/figures" "$2" -tc='*figure*' > "$WORK/tests.out" 2>&1; then
        echo "svg_test: the figure tests failed:" >&2; cat "$WORK/tests.out" >&2; exit 1
      fi
      files+=("$WORK"/figures/*.svg)
      shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[[ ${#files[@]} -gt 0 ]] || { echo "usage: tests/svg_test.sh [--tests HAMU_TESTS] [FILE.svg ...]" >&2; exit 1; }

failed=0
for svg in "${files[@]}"; do
  png="$WORK/$(basename "${svg%.svg}").png"
  if ! rsvg-convert -o "$png" "$svg" 2> "$WORK/render.err" || [[ -s $WORK/render.err ]]; then
    echo "FAIL: $svg does not render cleanly: $(cat "$WORK/render.err")" >&2; failed=$((failed + 1)); continue
  fi
  if [[ $(head -c 8 "$png" | od -An -tx1 | tr -d ' \n') != 89504e470d0a1a0a || $(stat -c %s "$png") -lt 2000 ]]; then
    echo "FAIL: $svg rendered to an empty or broken PNG" >&2; failed=$((failed + 1)); continue
  fi
  [[ -n ${SVG_TEST_KEEP:-} ]] && cp "$png" "$SVG_TEST_KEEP/"
done
echo "svg_test: ${#files[@]} figures rendered, $failed failed"
[[ $failed -eq 0 ]]
