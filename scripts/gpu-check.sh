#!/usr/bin/env bash
# scripts/gpu-check.sh OUTDIR: the one script for a machine with an NVIDIA (Hopper) GPU: finds nvcc and cuDNN,
# builds the CUDA library, tests and GPU benches, runs the CUDA parity tests (and a reduced set under
# compute-sanitizer), the CPU tests if time allows, and the GPU benches; writes OUTDIR/report.md and at most
# 8 files in all to OUTDIR (build.log, tests.log, sanitizer.log, cpu_tests.log, benches.log, report.md, ncu.txt),
# and prints a short table last. Issue #12: the step bench with its per-op-kind profile under each speed switch,
# the PyTorch peers (eager, channels-last, torch.compile), cnn training at batch 512 against PyTorch, the
# fused-update chunking sweep, ncu where present. Needs no network. Run scripts/gpu-prep.sh on the
# development machine first (header-only deps in .gpu-deps/, carried along).
#
# Whole run: under 8 minutes (every phase has a timeout; optional phases are skipped when time runs short).
# Exit status: 0 when everything built and every test that ran passed.
set -u

if [ $# -lt 1 ]; then
  echo "usage: scripts/gpu-check.sh OUTDIR" >&2
  exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-470}  # seconds for the whole script
# GPU_CHECK_TESTS_ONLY=1: build and run the CUDA tests only (a quick re-check after a fix);
# with GPU_CHECK_SANITIZER=1 also the compute-sanitizer pass.
if [ "${GPU_CHECK_TESTS_ONLY:-0}" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-150}; fi
BUILD=${GPU_CHECK_BUILD:-build-cuda}
FULL_BUILD=$BUILD
JOBS=$(nproc 2>/dev/null || echo 8)
[ "$JOBS" -gt 16 ] && JOBS=16

BUILD_LOG=$OUT/build.log
TEST_LOG=$OUT/tests.log
SAN_LOG=$OUT/sanitizer.log
CPU_LOG=$OUT/cpu_tests.log
REPORT=$OUT/report.md

# Scratch outside OUTDIR (only the files listed above come back from a device run, 8 at most): the
# environment notes (appended to the report) and a folder of unversioned-library symlinks for wheels that
# only ship libfoo.so.N.
SHIM=$(mktemp -d /tmp/hamu-gpu-shim.XXXXXX)
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/lib"
ENV_LOG=$SHIM/env.txt
: >"$ENV_LOG"

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
say() { echo "[gpu-check $(elapsed)s] $*"; }
envlog() { echo "$*" >>"$ENV_LOG"; }

FAILED=0
build_status="not run"
cuda_tests="not run"
san_status="not run"
cpu_tests="not run"
per_case=""
declare -A bench_status=()

# ---- environment --------------------------------------------------------------------------------
CARD="unknown"
DRIVER="unknown"
if command -v nvidia-smi >/dev/null 2>&1; then
  CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
  { echo "== nvidia-smi"; nvidia-smi 2>&1 | head -20; } >>"$ENV_LOG"
else
  envlog "nvidia-smi: not found"
fi
say "card: ${CARD:-unknown}, driver ${DRIVER:-unknown}"

py_pkg_dir() {  # py_pkg_dir MODULE: the folder of a (namespace) package of PyTorch's nvidia wheels, or nothing
  python3 - "$1" 2>/dev/null <<'EOF'
import importlib, sys
try:
    m = importlib.import_module(sys.argv[1])
    paths = list(getattr(m, "__path__", []))
    if not paths and getattr(m, "__file__", None):
        import os
        paths = [os.path.dirname(m.__file__)]
    print(paths[0] if paths else "")
except Exception:
    pass
EOF
}

shim_lib() {  # shim_lib DIR NAME: make $SHIM/lib/libNAME.so point at DIR/libNAME.so[.N]
  local f
  for f in "$1/lib$2.so" "$1"/lib"$2".so.[0-9]*; do
    if [ -e "$f" ]; then
      ln -sf "$f" "$SHIM/lib/lib$2.so"
      return 0
    fi
  done
  return 1
}

# nvcc: PATH, /usr/local/cuda, or PyTorch's nvidia/cuda_nvcc wheel.
NVCC=$(command -v nvcc 2>/dev/null || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
EXTRA_INC_FLAGS=""
EXTRA_LIB_FLAGS=""
if [ -z "$NVCC" ]; then
  d=$(py_pkg_dir nvidia.cuda_nvcc)
  if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then
    NVCC=$d/bin/nvcc
    # The runtime and cuBLAS then come from their wheels too.
    for pkg in nvidia.cuda_runtime nvidia.cublas nvidia.cuda_nvrtc; do
      p=$(py_pkg_dir "$pkg")
      [ -n "$p" ] || continue
      [ -d "$p/include" ] && EXTRA_INC_FLAGS="$EXTRA_INC_FLAGS -I$p/include"
      [ -d "$p/lib" ] && EXTRA_LIB_FLAGS="$EXTRA_LIB_FLAGS -L$p/lib -Wl,-rpath,$p/lib" &&
        export LD_LIBRARY_PATH="$p/lib:${LD_LIBRARY_PATH:-}"
      for l in cudart cublas cublasLt; do [ -d "$p/lib" ] && shim_lib "$p/lib" "$l"; done
    done
    EXTRA_LIB_FLAGS="$EXTRA_LIB_FLAGS -L$SHIM/lib"
  fi
fi
if [ -z "$NVCC" ]; then
  say "FAIL: no nvcc found (PATH, /usr/local/cuda/bin, PyTorch's nvidia/cuda_nvcc)"
  envlog "nvcc: not found"
  build_status="FAIL (no nvcc)"
  FAILED=1
else
  CUDA_HOME=$(cd "$(dirname "$NVCC")/.." && pwd)
  NVCC_VERSION=$("$NVCC" --version 2>&1 | grep -i release | head -1)
  say "nvcc: $NVCC ($NVCC_VERSION)"
  envlog "nvcc: $NVCC"
  envlog "nvcc version: $NVCC_VERSION"
  envlog "host compiler: $(g++ --version 2>&1 | head -1)"
fi

# cuDNN: the toolkit's, the system's, or PyTorch's nvidia/cudnn wheel.
CUDNN_DESC="not used (own im2col + cuBLAS convolution)"
CUDNN_MAKE=(CUDNN=0)
cudnn_version() {  # cudnn_version INCLUDE_DIR
  local h=$1/cudnn_version.h
  [ -f "$h" ] || return 0
  awk '/#define CUDNN_MAJOR/{a=$3}/#define CUDNN_MINOR/{b=$3}/#define CUDNN_PATCHLEVEL/{c=$3}END{print a"."b"."c}' "$h"
}
if [ -n "$NVCC" ]; then
  if [ -f "$CUDA_HOME/include/cudnn.h" ] && ls "$CUDA_HOME"/lib64/libcudnn.so* "$CUDA_HOME"/lib/libcudnn.so* >/dev/null 2>&1; then
    CUDNN_MAKE=(CUDNN=1 "CUDNN_HOME=$CUDA_HOME")
    if ! ls "$CUDA_HOME"/lib64/libcudnn.so "$CUDA_HOME"/lib/libcudnn.so >/dev/null 2>&1; then
      CUDNN_MAKE+=("CUDNN_LIB=-l:libcudnn.so.9")
    fi
    CUDNN_DESC="cuDNN $(cudnn_version "$CUDA_HOME/include") from $CUDA_HOME"
  elif [ -f /usr/include/cudnn.h ] && ls /usr/lib/x86_64-linux-gnu/libcudnn.so* >/dev/null 2>&1; then
    CUDNN_MAKE=(CUDNN=1 CUDNN_HOME=/usr)
    [ -e /usr/lib/x86_64-linux-gnu/libcudnn.so ] || CUDNN_MAKE+=("CUDNN_LIB=-l:libcudnn.so.9")
    CUDNN_DESC="cuDNN $(cudnn_version /usr/include) from the system (/usr)"
  else
    d=$(py_pkg_dir nvidia.cudnn)
    if [ -n "$d" ] && [ -f "$d/include/cudnn.h" ] && ls "$d"/lib/libcudnn.so* >/dev/null 2>&1; then
      # The wheel has libcudnn.so.9 but maybe no libcudnn.so: link through the shim.
      mkdir -p "$SHIM/cudnn"
      ln -sfn "$d/include" "$SHIM/cudnn/include"
      mkdir -p "$SHIM/cudnn/lib"
      for f in "$d"/lib/libcudnn*.so*; do ln -sf "$f" "$SHIM/cudnn/lib/"; done
      [ -e "$SHIM/cudnn/lib/libcudnn.so" ] || ln -sf "$(ls "$d"/lib/libcudnn.so.[0-9]* | head -1)" "$SHIM/cudnn/lib/libcudnn.so"
      CUDNN_MAKE=(CUDNN=1 "CUDNN_HOME=$SHIM/cudnn")
      EXTRA_LIB_FLAGS="$EXTRA_LIB_FLAGS -Wl,-rpath,$d/lib"
      export LD_LIBRARY_PATH="$d/lib:${LD_LIBRARY_PATH:-}"
      CUDNN_DESC="cuDNN $(cudnn_version "$d/include") from PyTorch's wheel ($d)"
    fi
  fi
fi
say "cudnn: $CUDNN_DESC"
envlog "cudnn: $CUDNN_DESC"

# Header-only deps and zlib: the system's, else .gpu-deps (scripts/gpu-prep.sh).
have_header() { echo "#include <$1>" | g++ -x c++ -fsyntax-only $EXTRA_INC_FLAGS - >/dev/null 2>&1; }
DEPS=$ROOT/.gpu-deps/include
for h in doctest/doctest.h stb/stb_image.h stb/stb_image_write.h; do
  if ! have_header "$h"; then
    if [ -f "$DEPS/$h" ]; then
      case " $EXTRA_INC_FLAGS " in *" -I$DEPS "*) ;; *) EXTRA_INC_FLAGS="$EXTRA_INC_FLAGS -I$DEPS" ;; esac
      envlog "deps: $h from .gpu-deps"
    else
      envlog "deps: $h MISSING (run scripts/gpu-prep.sh here and carry .gpu-deps)"
      say "warning: $h missing and not in .gpu-deps"
    fi
  fi
done
if ! have_header zlib.h; then
  if [ -f "$DEPS/zlib/zlib.h" ]; then
    EXTRA_INC_FLAGS="$EXTRA_INC_FLAGS -I$DEPS/zlib"
    envlog "deps: zlib.h from .gpu-deps"
  else
    envlog "deps: zlib.h MISSING"
  fi
fi
ZLIB_MAKE=()
if ! echo 'int main(){return 0;}' | g++ -x c++ - -lz -o "$SHIM/ztest" >/dev/null 2>&1; then
  if echo 'int main(){return 0;}' | g++ -x c++ - -l:libz.so.1 -o "$SHIM/ztest" >/dev/null 2>&1; then
    ZLIB_MAKE=("ZLIB_LIB=-l:libz.so.1")
    envlog "deps: linking zlib as -l:libz.so.1"
  else
    envlog "deps: no zlib to link"
  fi
fi
envlog "EXTRA_INC: $EXTRA_INC_FLAGS"
envlog "EXTRA_LIBDIR: $EXTRA_LIB_FLAGS"

# ---- build --------------------------------------------------------------------------------------
GPU_BENCHES=()
for f in bench/*.cpp; do
  [ -e "$f" ] || continue
  # A bench that asks for a GPU itself, or through bench_common.h's resolve_device (bench_attention,
  # bench_cross_entropy, bench_train since stop 13).
  grep -qE "cuda_device_count|resolve_device" "$f" && GPU_BENCHES+=("$(basename "$f" .cpp)")
done
# Issue #10's LoRA step bench takes --device cuda (it runs on the CPU too, so the grep above misses it).
[ -f bench/bench_lora_step.cpp ] && GPU_BENCHES+=(bench_lora_step)
BIN_TESTS=""
if [ -n "$NVCC" ]; then
  MAKE_ARGS=(CUDA=1 CUDA_ARCH=sm_90 "NVCC=$NVCC" "CUDA_HOME=$CUDA_HOME" "${CUDNN_MAKE[@]}" "${ZLIB_MAKE[@]}"
             "EXTRA_INC=$EXTRA_INC_FLAGS" "EXTRA_LIBDIR=$EXTRA_LIB_FLAGS")
  targets=("$BUILD/libhamu.a" "$BUILD/hamu_tests" "$BUILD/hamu")
  for b in "${GPU_BENCHES[@]}"; do targets+=("$BUILD/bench/$b"); done
  say "building (${MAKE_ARGS[*]} -j$JOBS) -> $BUILD_LOG"
  {
    echo "== make ${MAKE_ARGS[*]} BUILD=$BUILD -j$JOBS ${targets[*]}"
    timeout 270 make "${MAKE_ARGS[@]}" BUILD=$BUILD -j"$JOBS" "${targets[@]}"
    echo "== exit $?"
  } >"$BUILD_LOG" 2>&1
  if grep -q "^== exit 0$" "$BUILD_LOG"; then
    build_status="ok"
    BIN_TESTS=$BUILD/hamu_tests
  else
    say "FULL BUILD FAILED; last 60 lines of $BUILD_LOG:"
    tail -60 "$BUILD_LOG"
    build_status="FAIL (full build)"
    FAILED=1
    # Fallback: the kernels and the engine alone (CPU + CUDA) and the parity tests (the device layer and the
    # op and kernel tables), so the GPU kernels still get checked when some other part of the tree does not
    # build. No C API (it needs the whole library), no MPI/NCCL sources, no benches (they need unlearn/).
    if [ "$(left)" -gt 200 ]; then
      say "fallback build: kernels + engine + CUDA parity tests only (build-cuda-min)"
      {
        echo "== fallback: make ... BUILD=build-cuda-min (kernels + engine + parity tests only)"
        rm -f build-cuda-min/libhamu.a build-cuda-min/hamu_tests
        timeout 150 make "${MAKE_ARGS[@]}" BUILD=build-cuda-min -j"$JOBS" \
          "LIB_SRC=$(ls kernels/cpu/*.cpp engine/*.cpp | grep -v 'collectives_mpi\|collectives_nccl' | tr '\n' ' ')" \
          CAPI_SRC= TEST_CLI_SRC= \
          "TEST_SRC=tests/main.cpp tests/test_cuda_parity.cpp tests/test_backend_ops.cpp tests/backend_kernel_cases.cpp tests/backend_ops_table.cpp" \
          build-cuda-min/hamu_tests
        echo "== exit $?"
      } >>"$BUILD_LOG" 2>&1
      if tail -1 "$BUILD_LOG" | grep -q "^== exit 0$"; then
        build_status="FAIL (full build); fallback kernels+engine+parity build ok"
        BIN_TESTS=build-cuda-min/hamu_tests
        BUILD=build-cuda-min
      else
        say "fallback build failed too; last 40 lines:"
        tail -40 "$BUILD_LOG"
      fi
    fi
  fi
fi
say "build: $build_status"

# doctest summary of a log: "P passed, F failed of N test cases (A assertions, B failed)"
summary_of() {
  local l a
  l=$(grep -E "^\[doctest\] test cases:" "$1" | tail -1)
  a=$(grep -E "^\[doctest\] assertions:" "$1" | tail -1)
  if [ -z "$l" ]; then
    echo "no summary (crashed or timed out; see $(basename "$1"))"
    return
  fi
  echo "$l | $a" | sed -E 's/\[doctest\] //g; s/ +/ /g; s/ *\| */, /g; s/, *$//'
}
failed_count() {  # failed test cases in a doctest log, or 1 when there is no summary
  local l
  l=$(grep -E "^\[doctest\] test cases:" "$1" | tail -1)
  [ -z "$l" ] && { echo 1; return; }
  echo "$l" | sed -E 's/.*\| *([0-9]+) failed.*/\1/'
}

# ---- CUDA parity tests --------------------------------------------------------------------------
# The cases named "cuda: ..." (device layer, whole-engine and graph checks) and the table-driven parity of
# every op and kernel on the CUDA backend against the CPU (tests/test_backend_ops.cpp: its two tables run on
# every backend the machine has; the f64 finite-difference case is CPU-only and stays out).
GPU_TESTS='cuda:*,backend ops: every op*,backend kernels*'
if [ -n "$BIN_TESTS" ] && [ -x "$BIN_TESTS" ]; then
  say "CUDA parity tests -> $TEST_LOG"
  timeout 180 "$BIN_TESTS" -tc="$GPU_TESTS" --order-by=file >"$TEST_LOG" 2>&1
  rc=$?
  echo "== exit $rc" >>"$TEST_LOG"
  cuda_tests=$(summary_of "$TEST_LOG")
  [ $rc -eq 124 ] && cuda_tests="TIMEOUT after 180 s; $cuda_tests"
  if grep -q "skipped: no GPU" "$TEST_LOG"; then  # the tests pass vacuously without a GPU: not here
    cuda_tests="NO GPU VISIBLE to the CUDA runtime (tests skipped); $cuda_tests"
    rc=3
  fi
  if [ $rc -ne 0 ] || [ "$(failed_count "$TEST_LOG")" != "0" ]; then
    FAILED=1
    say "CUDA tests FAILED (exit $rc); first failures:"
    grep -E "ERROR|FATAL|CHECK|REQUIRE|rel err|TEST CASE|error" "$TEST_LOG" | head -40
  fi
  say "CUDA tests: $cuda_tests"
  grep -E "^cuda parity tests on" "$TEST_LOG" | head -1
  # After a failure, run each case in its own process: one device fault (a sticky error) would otherwise
  # fail every later case and hide which kernel is at fault.
  if [ $rc -ne 0 ] && [ "$(left)" -gt 200 ]; then
    say "re-running each CUDA test case in its own process"
    echo "== per-case re-run (each case in its own process)" >>"$TEST_LOG"
    mapfile -t CASES < <("$BIN_TESTS" --list-test-cases -tc="$GPU_TESTS" 2>/dev/null | sed -n '/^=====/,/^=====/p' | grep -v '^=====')
    for c in "${CASES[@]}"; do
      [ "$(left)" -lt 160 ] && { per_case="$per_case; (re-run stopped: time)"; break; }
      # doctest splits a filter at commas: a name's own commas are escaped, or the case would match nothing
      # and "pass" without running.
      timeout 60 "$BIN_TESTS" -tc="${c//,/\\,}" >"$SHIM/case.log" 2>&1
      crc=$?
      { echo "== case: $c (exit $crc)"; tail -80 "$SHIM/case.log"; } >>"$TEST_LOG"
      [ $crc -ne 0 ] && per_case="$per_case; FAIL($crc): $c"
      grep -q "test cases: 0 |" "$SHIM/case.log" && per_case="$per_case; NOT RUN (the filter matched nothing): $c"
    done
    say "per-case re-run:${per_case:- every case passed alone}"
  fi
fi

# ---- GPU benches (before the optional phases: their numbers are what the run is for) ------------
# All bench output goes to one file (a device run brings back at most 8 files).
BENCH_LOG=$OUT/benches.log
: >"$BENCH_LOG"
BENCH_TABLES=""
bench_args() {  # the arguments a bench gets here
  case "$1" in
    bench_hardness) echo "--device cuda" ;;
    bench_unlearn_step) echo "--profile" ;;
    # The cnn training step at batch 512 as bench/peer/train_cnn_torch.py times it (issue #12's training row).
    # --profile 1: then one step's per-op-kind profile (CUDA events), what issue #12 item 1 asks for training too.
    bench_train) echo "--device cuda --batch 512 --models cnn --steps 20 --reps 5 --profile 1" ;;
    # One batch's forward profiled after the timings (issue #12 item 6: where evaluation's time goes).
    bench_eval) echo "--profile 1" ;;
    # Llama-2-7B-shaped layers (8 of its 32: the per-layer work and the peer's ratio are the same; the whole
    # model in f32 would take the budget in random initialisation), batch 16 + 16 x 256 tokens.
    bench_lora_step) echo "--device cuda --preset 7b --layers 8 --steps 3" ;;
    *) echo "" ;;
  esac
}
# The step bench and its PyTorch peer first, then the rest (most valuable numbers first).
ORDERED=()
for b in bench_hamu_update bench_unlearn_step; do
  for g in "${GPU_BENCHES[@]}"; do [ "$g" = "$b" ] && ORDERED+=("$b"); done
done
for g in "${GPU_BENCHES[@]}"; do
  case " ${ORDERED[*]} " in *" $g "*) ;; *) ORDERED+=("$g") ;; esac
done
run_bench() {  # run_bench NAME TIMEOUT CMD...: appends its output to BENCH_LOG
  local name=$1 t=$2
  shift 2
  say "bench $name (timeout ${t}s) -> $BENCH_LOG"
  local tmp=$SHIM/bench.out
  timeout "$t" "$@" >"$tmp" 2>&1
  local rc=$?
  { echo "===== $name: $* (exit $rc)"; cat "$tmp"; echo; } >>"$BENCH_LOG"
  if [ $rc -eq 0 ]; then bench_status[$name]="ok"; else bench_status[$name]="FAIL (exit $rc)"; fi
  [ $rc -eq 124 ] && bench_status[$name]="TIMEOUT"
  BENCH_TABLES="$BENCH_TABLES
### $name

$(grep -E '^(bench_|hamu_step|train_cnn|attention_torch|lora_step_torch|eval with|profile of|  )' "$tmp" | head -24)

$(grep -E '^\|' "$tmp")
"
}
[ "${GPU_CHECK_TESTS_ONLY:-0}" = 1 ] && ORDERED=()
for b in "${ORDERED[@]}"; do
  bin=$BUILD/bench/$b
  [ -x "$bin" ] || { bench_status[$b]="not built"; continue; }
  if [ "$(left)" -lt 60 ]; then
    bench_status[$b]="skipped (time)"
    continue
  fi
  t=${GPU_CHECK_BENCH_TIMEOUT:-60}
  [ "$b" = bench_lora_step ] && t=150  # builds a 1.9-billion-parameter model first
  [ "$(left)" -lt $((t + 40)) ] && t=$(($(left) - 40))
  # shellcheck disable=SC2046
  run_bench "$b" "$t" "$bin" $(bench_args "$b")
  if [ "$b" = bench_hamu_update ] && [ "$(left)" -gt 200 ]; then
    # Issue #12 item 5: the chunking knob of reduce_mt.cu swept (default 2 chunks per CTA).
    for cpc in 4 8; do
      GPU_BENCHES+=(bench_hamu_update_cpc$cpc)
      run_bench bench_hamu_update_cpc$cpc 40 env HAMU_MT_CHUNKS_PER_CTA=$cpc "$bin" --reps 10
    done
  fi
  if [ "$b" = bench_train ] && [ "$(left)" -gt 200 ]; then
    # Issue #12 item 4: the same training step replayed from a captured CUDA graph.
    GPU_BENCHES+=(bench_train_graph)
    run_bench bench_train_graph 45 "$bin" $(bench_args "$b") --cuda-graph 1
  fi
  if [ "$b" = bench_eval ] && [ "$(left)" -gt 150 ]; then
    # Issue #12 items 4 and 6: the same 70,000-image evaluation beside its full batches replayed from a captured
    # CUDA graph (hamu eval --cuda-graph; the next batch staged on the host meanwhile; results checked bitwise).
    GPU_BENCHES+=(bench_eval_graph)
    run_bench bench_eval_graph 60 "$bin" $(bench_args "$b") --cuda-graph 1
  fi
  if [ "$b" = bench_lora_step ] && [ "$(left)" -gt 200 ]; then
    # Issue #10: the same step with the frozen base weights in bfloat16 (tensor-core GEMMs, half the memory).
    GPU_BENCHES+=(bench_lora_step_bf16)
    run_bench bench_lora_step_bf16 150 "$bin" $(bench_args "$b") --base-dtype bfloat16
  fi
  if [ "$b" = bench_lora_step ] && python3 -c "import torch, transformers, peft" >/dev/null 2>&1; then
    # Issue #10: the same step in PyTorch eager with transformers + peft, base in float32 (as ours) and bfloat16.
    for dt in float32 bfloat16; do
      if [ "$(left)" -gt 150 ]; then
        GPU_BENCHES+=(peer_lora_torch_$dt)
        run_bench peer_lora_torch_$dt 120 python3 bench/peer/lora_step_torch.py --preset 7b --layers 8 --steps 3 \
          --base-dtype $dt
      fi
    done
  fi
  if [ "$b" = bench_attention ] && [ "$(left)" -gt 120 ]; then
    # Issue #10: the fused kernels above against the unfused GEMM + softmax path and PyTorch's SDPA.
    GPU_BENCHES+=(bench_attention_unfused)
    run_bench bench_attention_unfused 60 env HAMU_ATTENTION=unfused "$bin"
    GPU_BENCHES+=(bench_attention_bf16)
    run_bench bench_attention_bf16 60 env HAMU_ATTENTION=bf16 "$bin"
    if python3 -c "import torch" >/dev/null 2>&1; then
      GPU_BENCHES+=(peer_attention_torch)
      run_bench peer_attention_torch 60 python3 bench/peer/attention_torch.py
    fi
  fi
  if [ "$b" = bench_unlearn_step ]; then
    # Issue #12: the step with the profile table under each switch (the default run above already measured
    # cuDNN algorithms and printed its profile): heuristic algorithm choice (the runs before #12), TF32, CUDA
    # graph replay, two passes; then the PyTorch peers (eager, channels-last, torch.compile).
    for v in "heuristic:--no-find --profile" "tf32:--tf32 --profile" "graph:--cuda-graph" "deterministic:--deterministic" \
             "two_pass:--no-paired"; do
      name=bench_unlearn_step_${v%%:*}
      if [ "$(left)" -gt 150 ]; then
        GPU_BENCHES+=("$name")
        # shellcheck disable=SC2086
        run_bench "$name" 40 "$bin" ${v#*:}
      else
        bench_status[$name]="skipped (time)"
      fi
    done
    if python3 -c "import torch" >/dev/null 2>&1 && [ "$(left)" -gt 120 ]; then
      GPU_BENCHES+=(peer_torch)
      run_bench peer_torch 150 python3 bench/peer/hamu_step_torch.py
    else
      bench_status[peer_torch]="skipped (no torch or time)"
    fi
  fi
done

# ---- cnn training throughput at batch 512: hamu train --device cuda vs the PyTorch eager peer -----------
if [ "${GPU_CHECK_TESTS_ONLY:-0}" != 1 ] && [ -x "$FULL_BUILD/hamu" ] && [ -d "$ROOT/.gpu-deps/fashion-mnist" ] &&
   [ "$(left)" -gt 110 ]; then
  GPU_BENCHES+=(train_cnn_512)
  run_bench train_cnn_512 45 env HAMU_DATA="$ROOT/.gpu-deps/fashion-mnist" HAMU_NO_PROGRESS=1 \
    "$FULL_BUILD/hamu" train --device cuda --model cnn --batch 512 --epochs 2 --out "$SHIM/cnn512.safetensors"
  GPU_BENCHES+=(train_cnn_512_graph)
  run_bench train_cnn_512_graph 45 env HAMU_DATA="$ROOT/.gpu-deps/fashion-mnist" HAMU_NO_PROGRESS=1 \
    "$FULL_BUILD/hamu" train --device cuda --model cnn --batch 512 --epochs 2 --cuda-graph \
    --out "$SHIM/cnn512g.safetensors"
  GPU_BENCHES+=(train_cnn_512_graph_sgd_clip)  # sgd's first-step flags and the device-side clip, graphed
  run_bench train_cnn_512_graph_sgd_clip 45 env HAMU_DATA="$ROOT/.gpu-deps/fashion-mnist" HAMU_NO_PROGRESS=1 \
    "$FULL_BUILD/hamu" train --device cuda --model cnn --batch 512 --epochs 2 --cuda-graph --optimizer sgd \
    --lr 0.05 --clip 1 --out "$SHIM/cnn512gs.safetensors"
  # (bench_train, run with the benches above, times the step alone as the peer does: the issue's comparison;
  # this run adds the data pipeline: normalising and copying each batch.)
  if python3 -c "import torch" >/dev/null 2>&1; then
    GPU_BENCHES+=(peer_train_cnn_torch)
    run_bench peer_train_cnn_torch 60 python3 bench/peer/train_cnn_torch.py --batch 512
  fi
fi

# ---- ncu on a few kernels of one step (optional: only where ncu exists and time allows) ---------------
NCU=$(command -v ncu 2>/dev/null || true)
[ -z "$NCU" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/ncu" ] && NCU=$CUDA_HOME/bin/ncu
if [ "${GPU_CHECK_TESTS_ONLY:-0}" != 1 ] && [ -n "$NCU" ] && [ -x "$BUILD/bench/bench_unlearn_step" ] && [ "$(left)" -gt 200 ]; then
  say "ncu (speed of light, 40 kernels of one step) -> $OUT/ncu.txt"
  timeout 60 "$NCU" --section SpeedOfLight --launch-skip 400 --launch-count 40 \
    "$BUILD/bench/bench_unlearn_step" --steps 1 >"$OUT/ncu.txt" 2>&1 || echo "== ncu exit $?" >>"$OUT/ncu.txt"
fi

# ---- the hamu command on the GPU: train, unlearn, eval on Fashion-MNIST (carried in .gpu-deps) -----
SMOKE_DATA=$ROOT/.gpu-deps/fashion-mnist
if [ "${GPU_CHECK_TESTS_ONLY:-0}" != 1 ] && [ -n "$BIN_TESTS" ] && [ -x "$FULL_BUILD/hamu" ] && [ -d "$SMOKE_DATA" ] && [ "$(left)" -gt 90 ]; then
  GPU_BENCHES+=(cli_smoke)
  smoke() {
    export HAMU_DATA=$SMOKE_DATA HAMU_NO_PROGRESS=1
    local h=$FULL_BUILD/hamu d=$SHIM/smoke
    mkdir -p "$d"
    $h train --device cuda --model cnn --split class=0 --epochs 1 --out "$d/orig.safetensors" &&
      $h unlearn --device cuda --model "$d/orig.safetensors" --method hamu-q --steps 100 --json "$d/u.json" &&
      $h eval --device cuda --model "$d/orig.safetensors" --batch 2000 || return 1
    # Issue #12 item 4: the same unlearning as captured CUDA graphs, seconds of the step loop side by side.
    # Deterministic algorithms, picked by cuDNN's heuristic (a measured pick may differ between two
    # processes): the two runs must end on the same weights, bit for bit.
    for g in "" --cuda-graph; do
      HAMU_CUDNN_FIND=0 $h unlearn --device cuda --deterministic $g --model "$d/orig.safetensors" --method hamu-q --steps 100 \
        --out "$d/u${g:+_graph}.safetensors" --json "$d/u${g:+_graph}.json" || return 1
      echo "unlearn ${g:-(ordinary)}: $(grep -o '"seconds": [0-9.e+-]*' "$d/u${g:+_graph}.json" | head -1)" \
        "$(tr -d '\n ' < "$d/u${g:+_graph}.json" | grep -o '"cuda_graph":{[^}]*}')"
    done
    # Issue #12 item 4 (evaluation batches): hamu eval with and without --cuda-graph (the same algorithms in
    # both processes): every split's numbers and the membership AUCs must be the same to the last digit.
    for g in "" --cuda-graph; do
      HAMU_CUDNN_FIND=0 $h eval --device cuda --deterministic $g --model "$d/orig.safetensors" \
        --json "$d/e${g:+_graph}.json" >/dev/null || return 1
    done
    echo "eval --cuda-graph: $(tr -d '\n ' < "$d/e_graph.json" | grep -o '"cuda_graph":{[^}]*}')"
    numbers() { grep -E '"(n|acc|loss|entropy|retain_forget_auc|forget_test_auc)":' "$1"; }
    if [ "$(numbers "$d/e.json")" = "$(numbers "$d/e_graph.json")" ]; then
      echo "cuda graph: the graphed evaluation's numbers are identical to the ordinary one's"
    else
      echo "cuda graph: the graphed evaluation's numbers DIFFER from the ordinary one's"; return 1
    fi
    # The tensor bytes after the safetensors header (the header's metadata records the flags).
    body() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1" | md5sum | cut -c1-32; }
    if [ "$(body "$d/u.safetensors")" = "$(body "$d/u_graph.safetensors")" ]; then
      echo "cuda graph: the unlearned weights are identical to the ordinary run's"
    else
      echo "cuda graph: the unlearned weights DIFFER from the ordinary run's"; return 1
    fi
  }
  run_bench cli_smoke $(($(left) - 45)) bash -c "$(declare -f smoke); SMOKE_DATA=$SMOKE_DATA FULL_BUILD=$FULL_BUILD SHIM=$SHIM smoke"
else
  bench_status[cli_smoke]="skipped (no data/binary/time)"
fi
# Issue #10: a LoRA run on the llama fixture with the base in bfloat16 against float32 (the eval losses agree
# to about 1e-2), and the --merge from the float32 base.
if [ "${GPU_CHECK_TESTS_ONLY:-0}" != 1 ] && [ -x "$FULL_BUILD/hamu" ] && [ "$(left)" -gt 60 ]; then
  GPU_BENCHES+=(cli_bf16)
  bf16_smoke() {
    export HAMU_NO_PROGRESS=1
    local h=$FULL_BUILD/hamu d=$SHIM/bf16 q=qa:tests/fixtures/qa/tiny.jsonl
    rm -rf "$d" && mkdir -p "$d"
    $h train --device cuda --data $q --model tests/fixtures/lm_text/llama --lora r=4,alpha=8 --epochs 3 --batch 5 \
      --base-dtype bfloat16 --out "$d/L" --merge "$d/M" || return 1
    for dt in float32 bfloat16; do
      $h eval --device cuda --model "$d/L" --data $q --base-dtype $dt --json "$d/e_$dt.json" >/dev/null || return 1
      echo "eval with base $dt: $(grep -o '"loss": [-0-9.e+]*' "$d/e_$dt.json" | head -1)"
    done
  }
  run_bench cli_bf16 60 bash -c "$(declare -f bf16_smoke); FULL_BUILD=$FULL_BUILD SHIM=$SHIM bf16_smoke"
else
  bench_status[cli_bf16]="skipped (no binary/time)"
fi

# ---- issue #13: the MPI + NCCL build with one rank (optional: Open MPI and nccl.h must be on the machine) --
# The overlapped exchange's side-stream path runs in the parity tests above (forced, one process); here the
# NCCL build itself: one rank under mpirun passes the same CUDA tests. Two ranks on one GPU are not
# possible with NCCL (one GPU per rank), so the exchange itself needs a machine with two GPUs.
MPICXX_BIN=$(command -v mpicxx 2>/dev/null || true)
NCCL_DIR=""
for d in "${CUDA_HOME:-}" "$(py_pkg_dir nvidia.nccl)"; do [ -n "$d" ] && [ -f "$d/include/nccl.h" ] && { NCCL_DIR=$d; break; }; done
if [ "${GPU_CHECK_TESTS_ONLY:-0}" != 1 ] && [ -n "$BIN_TESTS" ] && [ -n "$MPICXX_BIN" ] && [ -n "$NCCL_DIR" ] && [ "$(left)" -gt 240 ]; then
  GPU_BENCHES+=(nccl_one_rank)
  nccl_lib=(); [ -f "$NCCL_DIR/lib/libnccl.so" ] || nccl_lib=("NCCL_LIB=-L$NCCL_DIR/lib -l:libnccl.so.2 -Wl,-rpath,$NCCL_DIR/lib")
  nccl_phase() {
    timeout 200 make "${MAKE_ARGS[@]}" MPI=1 "NCCL_HOME=$NCCL_DIR" "${nccl_lib[@]}" BUILD=build-cuda-mpi -j"$JOBS" \
      build-cuda-mpi/hamu_tests >/dev/null 2>"$SHIM/nccl_build.err" || { echo "build failed:"; tail -20 "$SHIM/nccl_build.err"; return 1; }
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    timeout 120 mpirun -np 1 build-cuda-mpi/hamu_tests -tc='cuda:*' 2>&1 | grep -E "^\[doctest\] (test cases|assertions)"
  }
  run_bench nccl_one_rank $(($(left) - 60)) bash -c "$(declare -f nccl_phase); MAKE_ARGS=(${MAKE_ARGS[*]@Q}); NCCL_DIR=$NCCL_DIR; nccl_lib=(${nccl_lib[*]@Q}); JOBS=$JOBS; SHIM=$SHIM; nccl_phase"
else
  bench_status[nccl_one_rank]="skipped (no mpicxx, no nccl.h, or no time)"
fi

# ---- compute-sanitizer memcheck on a reduced set ------------------------------------------------
SAN=$(command -v compute-sanitizer 2>/dev/null || true)
[ -z "$SAN" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ] && SAN=$CUDA_HOME/bin/compute-sanitizer
if [ "${GPU_CHECK_TESTS_ONLY:-0}" = 1 ] && [ "${GPU_CHECK_SANITIZER:-0}" != 1 ]; then
  san_status="not run (tests-only check)"
elif [ -z "$BIN_TESTS" ]; then
  san_status="not run (no test binary)"
elif [ -z "$SAN" ]; then
  san_status="not run (compute-sanitizer not found)"
elif [ "$(left)" -lt 140 ]; then
  san_status="skipped (time)"
else
  t=$(($(left) - 110))
  [ $t -gt 60 ] && t=60
  SAN_CASES='cuda: adamw_step_dev*,cuda: sgd_step_dev*,cuda: clip_coef*,cuda: profile of a resnet20*,cuda: a CUDA-graph*,cuda: hamu_coefficients hits*,cuda: multi_sum_squares*,cuda: im2col*,cuda: max and average pooling,cuda: embedding*,cuda: ghost*,cuda: layernorm*,cuda: reduce_axis*,cuda: hamu_block_stats*,cuda: bf16 tensor-core attention*,cuda: FusedUpdate runs small HAMU steps*,cuda: fused cross-entropy*,cuda: reductions queued on several streams*,cuda: a first reduction on a stream*'
  say "compute-sanitizer memcheck on a reduced set (timeout ${t}s) -> $SAN_LOG"
  # The kernels and ops of the parity tables, by subcase (their test cases hold one subcase per kernel/op).
  SAN_TABLE='backend ops: every op*,backend kernels*'
  SAN_SUBCASES='im2col*,multi_sum_squares*,reduce_axis*,hamu_block_stats*,hamu_coefficients hits*,SGD and AdamW*,cross_entropy fused*,max_pool2d,avg_pool2d,embedding,layer_norm,batch_norm_act,ghost_hadamard*'
  timeout "$t" "$SAN" --tool memcheck --error-exitcode 99 --print-limit 20 "$BIN_TESTS" -tc="$SAN_CASES" \
    --order-by=file >"$SAN_LOG" 2>&1
  rc=$?
  echo "== exit $rc" >>"$SAN_LOG"
  if [ $rc -eq 0 ] && [ "$(left)" -gt 130 ]; then
    t2=$(($(left) - 110))
    [ $t2 -gt 60 ] && t2=60
    say "compute-sanitizer memcheck on the parity tables' kernels (timeout ${t2}s) -> $SAN_LOG"
    echo "== the parity tables: -tc='$SAN_TABLE' -sc='$SAN_SUBCASES'" >>"$SAN_LOG"
    timeout "$t2" "$SAN" --tool memcheck --error-exitcode 99 --print-limit 20 "$BIN_TESTS" -tc="$SAN_TABLE" \
      -sc="$SAN_SUBCASES" --order-by=file >>"$SAN_LOG" 2>&1
    rc=$?
    echo "== exit $rc" >>"$SAN_LOG"
    [ $rc -eq 124 ] && t=$t2
  fi
  errs=$(grep -E "ERROR SUMMARY" "$SAN_LOG" | tail -1)
  if [ $rc -eq 124 ]; then
    san_status="timed out after ${t}s (partial: $(grep -c '^\[doctest\]\|TEST CASE' "$SAN_LOG") lines; ${errs:-no summary})"
    grep -q "Invalid\|out of bounds\|misaligned" "$SAN_LOG" && { san_status="ERRORS before timeout; $san_status"; FAILED=1; }
  elif [ $rc -eq 0 ]; then
    san_status="clean: ${errs:-no errors}; $(summary_of "$SAN_LOG")"
  else
    san_status="FAIL (exit $rc): ${errs:-see sanitizer.log}; $(summary_of "$SAN_LOG")"
    FAILED=1
  fi
fi
say "sanitizer: $san_status"

# ---- the CPU tests (same binary), if time allows ------------------------------------------------
if [ "${GPU_CHECK_TESTS_ONLY:-0}" != 1 ] && [ -n "$BIN_TESTS" ] && [ "$BIN_TESTS" = "$FULL_BUILD/hamu_tests" ]; then
  if [ "$(left)" -gt 90 ]; then
    t=$(($(left) - 25))
    [ $t -gt 60 ] && t=60
    say "CPU tests (timeout ${t}s) -> $CPU_LOG"
    timeout "$t" "$BIN_TESTS" -tce='cuda:*' >"$CPU_LOG" 2>&1
    rc=$?
    echo "== exit $rc" >>"$CPU_LOG"
    cpu_tests=$(summary_of "$CPU_LOG")
    if [ $rc -eq 124 ]; then
      cpu_tests="timed out after ${t}s (not counted as a failure): $cpu_tests"
    elif [ $rc -ne 0 ]; then
      FAILED=1
    fi
  else
    cpu_tests="skipped (time)"
  fi
fi
say "CPU tests: $cpu_tests"

# ---- report -------------------------------------------------------------------------------------
{
  echo "# GPU check: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "| item | value |"
  echo "|---|---|"
  echo "| card | ${CARD:-unknown} |"
  echo "| driver | ${DRIVER:-unknown} |"
  echo "| nvcc | ${NVCC:-none} (${NVCC_VERSION:-?}) |"
  echo "| cuDNN | $CUDNN_DESC |"
  echo "| build | $build_status |"
  echo "| CUDA parity tests | $cuda_tests |"
  [ -n "$per_case" ] && echo "| CUDA cases re-run alone | ${per_case#; } |"
  echo "| compute-sanitizer memcheck | $san_status |"
  echo "| CPU tests | $cpu_tests |"
  for b in "${GPU_BENCHES[@]}"; do echo "| $b | ${bench_status[$b]:-not run} |"; done
  echo "| total time | $(elapsed) s |"
  echo
  echo "## Benches"
  echo "$BENCH_TABLES"
  echo "## Environment"
  echo
  echo '```'
  cat "$ENV_LOG"
  echo '```'
  echo
  if [ "$FAILED" -ne 0 ]; then
    echo "## First failures"
    echo
    echo '```'
    [ -f "$TEST_LOG" ] && grep -E "ERROR|FATAL|rel err|error:" "$TEST_LOG" | head -30
    [ -f "$BUILD_LOG" ] && grep -E "error" "$BUILD_LOG" | head -20
    echo '```'
  fi
} >"$REPORT"

echo
echo "================ GPU CHECK SUMMARY ($(elapsed) s) ================"
echo "card: ${CARD:-unknown} | driver ${DRIVER:-unknown} | ${NVCC_VERSION:-no nvcc} | cuDNN: $CUDNN_DESC"
echo "build: $build_status"
echo "CUDA tests: $cuda_tests"
[ -n "$per_case" ] && echo "CUDA cases re-run alone: ${per_case#; }"
echo "sanitizer: $san_status"
echo "CPU tests: $cpu_tests"
for b in "${GPU_BENCHES[@]}"; do echo "$b: ${bench_status[$b]:-not run}"; done
echo "$BENCH_TABLES" | grep -E '^(\||###)'
echo "result: $([ $FAILED -eq 0 ] && echo PASS || echo FAIL)"
exit $FAILED
