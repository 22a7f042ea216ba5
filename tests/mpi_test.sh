#!/usr/bin/env bash
# tests/mpi_test.sh: many processes on the CPU (MPI build): N-rank runs against the 1-rank run.
#
# Run:   tests/mpi_test.sh [BUILD]     (default build-mpi; `make MPI=1 test` runs it after the other tests)
#        MPI_TEST_KEEP=1 ...           keeps the scratch folder
#
#   1. the collectives suite of hamu_tests under mpirun -np 1, 2 and 4 (rank-order sums bitwise the same
#      on every rank; data-parallel training of an mlp equals the 1-rank run in-process);
#   2. `hamu train` (mlp) and `hamu unlearn` (hamu-q, gdiff; data-parallel and --pairing split) under
#      mpirun -np 2 and -np 4: the checkpoint equals the 1-rank run's within 1e-5 relative (largest
#      |difference| over the largest |weight|), and rank 0 alone writes;
#   2a. text training and unlearning (gpt2 fixture) under -np 2 and -np 4 against one rank;
#       the gradient all-reduce overlapped with the backward (small buckets) equals the packed one bitwise;
#   2b. `hamu hardness` (image and text) under -np 2 and -np 4: the report equals the 1-rank one within 1e-5;
#   3. faults: different command lines refused with exit code 2; a rank that dies or hangs (HAMU_FAULT)
#      stops the run within a bounded time with an error naming the collective; no checkpoint written.
# The data is a tiny synthetic IDX set written with awk, so the whole script takes well under a minute.
set -u

BUILD=${1:-build-mpi}
HAMU=$BUILD/hamu
TESTS=$BUILD/hamu_tests
for b in "$HAMU" "$TESTS"; do
  [[ -x $b ]] || { echo "mpi_test: $b is not an executable (make MPI=1 BUILD=$BUILD first)" >&2; exit 1; }
done
command -v mpirun >/dev/null || { echo "mpi_test: mpirun not found (scripts/install-deps.sh installs Open MPI)" >&2; exit 1; }
HAMU=$(cd "$(dirname "$HAMU")" && pwd)/hamu
TESTS=$(cd "$(dirname "$TESTS")" && pwd)/hamu_tests

FIX=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fixtures
WORK=$(mktemp -d /tmp/hamu_mpi_test.XXXXXX)
if [[ -n ${MPI_TEST_KEEP:-} ]]; then echo "mpi_test: scratch folder $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi
cd "$WORK" || exit 1

# CI runs as root; more ranks than cores; no CMA single-copy (often not permitted in containers).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 HAMU_NO_PROGRESS=1
MPIRUN=(mpirun --oversubscribe --bind-to none)

FAILED=0
PASSED=0
pass() { PASSED=$((PASSED + 1)); }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*" >&2; }

# ---- data: 64 8x8 images, 4 classes, each class slightly brightens its own band of rows -----------

write_idx() {  # DIR PREFIX N
  LC_ALL=C awk -v n="$3" -v img="$1/$2-images-idx3-ubyte" -v lab="$1/$2-labels-idx1-ubyte" 'BEGIN {
    srand(7)
    printf "%c%c%c%c", 0, 0, 8, 3 > img
    printf "%c%c%c%c%c%c%c%c%c%c%c%c", 0, 0, 0, n, 0, 0, 0, 8, 0, 0, 0, 8 > img
    printf "%c%c%c%c%c%c%c%c", 0, 0, 8, 1, 0, 0, 0, n > lab
    for (i = 0; i < n; i++) {
      y = i % 4
      printf "%c", y > lab
      for (p = 0; p < 64; p++) printf "%c", int(rand() * 120) + (int(p / 16) == y ? 30 : 0) > img
    }
  }'
}
mkdir -p data
write_idx data train 64
write_idx data t10k 32
D=idx:$WORK/data

# Largest |a - b| over the largest |b| of two checkpoints' float32 weights (same model, same order).
weights() {  # FILE: the weights as text, one per line
  local hlen
  hlen=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
  tail -c +$((8 + hlen + 1)) "$1" | od -An -v -t f4 -w4 | tr -d ' '
}
rel_diff() {
  paste <(weights "$1") <(weights "$2") | awk '
    { d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; b = $2 < 0 ? -$2 : $2; if (b > s) s = b; n++ }
    END { if (n == 0 || s == 0) print "nan"; else printf "%.3g\n", m / s }'
}
# expect_close NAME FILE REF [TOL]: within TOL (default 1e-5) relative.
expect_close() {
  local r tol=${4:-1e-5}
  if [[ ! -s $2 ]]; then fail "$1: $2 was not written"; return; fi
  r=$(rel_diff "$2" "$3")
  if awk -v r="$r" -v t="$tol" 'BEGIN { exit !(r == r + 0 && r <= t + 0) }'; then
    pass; printf '  %-34s max rel diff %s\n' "$1" "$r"
  else
    fail "$1: max relative weight difference $r > $tol against $3"
  fi
}
# run NAME CMD...: must succeed.
run() {
  local name=$1; shift
  if ! "$@" > "log_$name.out" 2> "log_$name.err"; then
    fail "$name: exit code $? ($*)"; sed 's/^/    /' "log_$name.err" | tail -20 >&2; return 1
  fi
  return 0
}

echo "mpi_test: $(mpirun --version | head -1), $(nproc) cores"

# ---- 1. the collectives suite under 1, 2 and 4 ranks -----------------------------------------------

for np in 1 2 4; do
  if run "suite_np$np" "${MPIRUN[@]}" -np "$np" "$TESTS" -ts=collectives; then
    pass; printf '  %-34s %s\n' "hamu_tests collectives -np $np" "$(grep -m1 -o 'max relative parameter difference [^ ]*' "log_suite_np$np.out")"
  fi
done

# ---- 2. training and unlearning: N ranks against 1 ------------------------------------------------

# SGD: AdamW divides by sqrt(v), so near-zero gradient coordinates carry their rounding into whole steps
# (hamu_tests checks AdamW training in-process, within 1e-4).
T=(train --data "$D" --model mlp --split class=1 --epochs 2 --batch 16 --optimizer sgd --lr 0.05 --threads 1)
run train_1 "$HAMU" "${T[@]}" --out train_1.safetensors || exit 1
for np in 2 4; do
  run "train_$np" "${MPIRUN[@]}" -np "$np" "$HAMU" "${T[@]}" --out "train_$np.safetensors" --json "train_$np.json" &&
    expect_close "train mlp -np $np" "train_$np.safetensors" train_1.safetensors
done

U=(unlearn --model train_1.safetensors --data "$D" --split class=1 --batch 16 --forget-batch 8 --threads 1)
for method in hamu-q gdiff; do
  run "unlearn_${method}_1" "$HAMU" "${U[@]}" --steps 6 --method "$method" --out "u_${method}_1.safetensors" || continue
  grep -q ' 0 steps' "log_unlearn_${method}_1.out" && fail "unlearn $method: no step was taken, nothing to compare"
  for np in 2 4; do
    for pairing in data split; do
      tag=u_${method}_${pairing}_$np
      run "$tag" "${MPIRUN[@]}" -np "$np" "$HAMU" "${U[@]}" --steps 6 --method "$method" --pairing "$pairing" \
        --out "$tag.safetensors" --log "$tag.csv" --json "$tag.json" &&
        expect_close "unlearn $method $pairing -np $np" "$tag.safetensors" "u_${method}_1.safetensors"
    done
  done
done
# The all-reduce overlapped with the backward (1 KB buckets: several per step, reduced on the
# communication thread while the backward runs) gives bitwise the same weights as one packed all-reduce
# after the backward (HAMU_OVERLAP=0): paired pass, two passes, split pairing, and training.
same_bits() {  # NAME FILE REF
  if [[ -s $2 && -s $3 ]] && cmp -s <(weights "$2") <(weights "$3"); then
    pass; printf '  %-34s bitwise equal\n' "$1"
  else
    fail "$1: $2 differs from $3 (or was not written)"
  fi
}
for variant in "data" "data --no-paired" "split"; do
  read -r pairing extra <<< "$variant"
  tag=ov_${pairing}${extra:+_two_pass}
  for mode in "HAMU_OVERLAP=0" "HAMU_BUCKET_KB=1"; do
    run "${tag}_${mode%%=*}" env "$mode" "${MPIRUN[@]}" -np 2 "$HAMU" "${U[@]}" --steps 4 --method hamu-q \
      --pairing "$pairing" $extra --out "${tag}_${mode%%=*}.safetensors"
  done
  same_bits "overlap: unlearn $variant -np 2" "${tag}_HAMU_BUCKET_KB.safetensors" "${tag}_HAMU_OVERLAP.safetensors"
done
for mode in "HAMU_OVERLAP=0" "HAMU_BUCKET_KB=1"; do
  run "ov_train_${mode%%=*}" env "$mode" "${MPIRUN[@]}" -np 4 "$HAMU" "${T[@]}" --out "ov_train_${mode%%=*}.safetensors"
done
same_bits "overlap: train -np 4" ov_train_HAMU_BUCKET_KB.safetensors ov_train_HAMU_OVERLAP.safetensors

# Language models: text training (each rank its rows of every padded batch, the loss normalised by the
# global batch's answer tokens; AdamW, hence 1e-4 as in hamu_tests) and text unlearning (a side averaged
# over answer tokens weighted by this rank's share of them; the fixture's long pair keeps no answer token
# after truncation, so some ranks hold a share with none) against one rank; rank 0 alone writes.
TT=(train --model "$FIX/lm_text/gpt2" --data "qa:$FIX/qa/tiny.jsonl" --split fraction=0.3 --epochs 2 --batch 4
    --schedule constant --threads 1)
if run text_train_1 "$HAMU" "${TT[@]}" --out text_1; then
  for np in 2 4; do
    run "text_train_$np" "${MPIRUN[@]}" -np "$np" "$HAMU" "${TT[@]}" --out "text_$np" --json "text_$np.json" &&
      expect_close "train gpt2 (text) -np $np" "text_$np/model.safetensors" text_1/model.safetensors 1e-4
  done
  TU=(unlearn --model text_1 --method gdiff --steps 4 --batch 4 --forget-batch 2 --threads 1)
  if run text_unlearn_1 "$HAMU" "${TU[@]}" --out text_u_1; then
    for case in "data 2" "split 2" "split 4"; do
      read -r pairing np <<< "$case"
      tag=text_u_${pairing}_$np
      run "$tag" "${MPIRUN[@]}" -np "$np" "$HAMU" "${TU[@]}" --pairing "$pairing" --out "$tag" --log "$tag.csv" &&
        expect_close "unlearn gdiff (text) $pairing -np $np" "$tag/model.safetensors" text_u_1/model.safetensors
    done
    n=$(grep -c '^row,' text_u_split_4.csv 2>/dev/null)
    [[ $n -eq 1 ]] && pass || fail "text unlearn -np 4: the CSV has $n header lines, expected one"
  fi
fi

# Rank 0 alone printed and wrote: one results table, one CSV header, no stray temporaries.
tag=u_hamu-q_data_4
if [[ -s log_$tag.out ]]; then
  n=$(grep -c '^hamu-q: ' "log_$tag.out")
  [[ $n -eq 1 ]] && pass || fail "$tag: the summary line was printed $n times, expected once"
  n=$(grep -c '^row,' "$tag.csv")
  [[ $n -eq 1 ]] && pass || fail "$tag: the CSV has $n header lines, expected one"
fi
ls ./*.tmp.* >/dev/null 2>&1 && fail "temporary files left: $(ls ./*.tmp.*)" || pass

# ---- 2b. hardness across ranks: each rank scores its share of the retain and forget samples (its tiles of
# K); the gathered report equals the 1-rank one within 1e-5 relative (per field: largest |difference| over
# the largest |value|), the most similar retain sample of every forget sample the same.
hardness_fields() {  # FILE: "name value" per line, in file order
  grep -oE '"(kappa|kappa_clipped|cosine|retain_grad_norm|forget_grad_norm|share_hard|norm|loss|similar_index|similar_k|similar_cosine)": [-0-9.e+]+' "$1" |
    tr -d '":,'
}
expect_same_hardness() {  # NAME FILE REF
  local r
  if [[ ! -s $2 ]]; then fail "$1: $2 was not written"; return; fi
  r=$(paste -d' ' <(hardness_fields "$2") <(hardness_fields "$3") | awk '
    $1 != $3 { bad = 1 }
    { d = $2 - $4; if (d < 0) d = -d; b = $4 < 0 ? -$4 : $4
      if (d > m[$1]) m[$1] = d; if (b > s[$1]) s[$1] = b
      if ($1 == "similar_index" && d != 0) bad = 1; n++ }
    END { if (bad || n < 10) { print "mismatch"; exit }
          w = 0; for (k in m) if (s[k] > 0 && m[k] / s[k] > w) w = m[k] / s[k]; printf "%.3g\n", w }')
  if awk -v r="$r" 'BEGIN { exit !(r == r + 0 && r <= 1e-5) }'; then
    pass; printf '  %-34s max rel diff %s\n' "$1" "$r"
  else
    fail "$1: the report differs from the 1-rank one ($r)"
  fi
}
HI=(hardness --model train_1.safetensors --data "$D" --split class=1 --batch 8 --threads 1)
HT=(hardness --model "$FIX/lm_text/gpt2" --data "qa:$FIX/qa/tiny.jsonl" --split fraction=0.3 --duplicates exact --batch 2 --threads 1)
for kind in image text; do
  if [[ $kind == image ]]; then H=("${HI[@]}"); else H=("${HT[@]}"); fi
  run "hard_${kind}_1" "$HAMU" "${H[@]}" --json "h_${kind}_1.json" || continue
  for np in 2 4; do
    run "hard_${kind}_$np" "${MPIRUN[@]}" -np "$np" "$HAMU" "${H[@]}" --json "h_${kind}_$np.json" &&
      expect_same_hardness "hardness $kind -np $np" "h_${kind}_$np.json" "h_${kind}_1.json"
  done
done
n=$(grep -c '^verdict: ' log_hard_image_4.out 2>/dev/null)
[[ $n -eq 1 ]] && pass || fail "hardness -np 4: the verdict was printed $n times, expected once"

# ---- 3. faults ------------------------------------------------------------------------------------

# expect_stop NAME RC_WANT WANT SECONDS CMD...: exits with RC_WANT (any non-zero for "nz") within
# SECONDS, stderr contains WANT, and no checkpoint out/u.safetensors.
expect_stop() {
  local name=$1 rc_want=$2 want=$3 limit=$4; shift 4
  rm -rf out && mkdir out
  local t0=$SECONDS
  timeout $((limit + 30)) "$@" > "log_$name.out" 2> "log_$name.err"
  local rc=$? took=$((SECONDS - t0))
  if [[ $rc_want == nz && $rc -eq 0 ]] || [[ $rc_want != nz && $rc -ne $rc_want ]]; then
    fail "$name: exit code $rc, expected $rc_want"; sed 's/^/    /' "log_$name.err" | head >&2; return
  fi
  if (( took > limit )); then fail "$name: took $took s, more than $limit"; return; fi
  if ! grep -qF -- "$want" "log_$name.err"; then
    fail "$name: stderr does not mention '$want'"; sed 's/^/    /' "log_$name.err" | head >&2; return
  fi
  if [[ -n $(ls -A out) ]]; then fail "$name: files were written: $(ls -A out | tr '\n' ' ')"; return; fi
  pass; printf '  %-34s exit %d after %d s\n' "$name" "$rc" "$took"
}
F=("$HAMU" "${U[@]}" --method hamu-q --steps 50 --out out/u.safetensors --json out/u.json)
expect_stop mismatch-argv 2 "ranks disagree on the command line" 60 \
  "${MPIRUN[@]}" -np 1 "${F[@]}" --seed 1 : -np 1 "${F[@]}" --seed 2
expect_stop split-odd-ranks 2 "even number of ranks" 60 "${MPIRUN[@]}" -np 3 "${F[@]}" --pairing split
expect_stop rank-dies nz "HAMU_FAULT: dying" 60 env HAMU_FAULT=die:1:5 "${MPIRUN[@]}" -np 2 "${F[@]}"
expect_stop rank-hangs nz "has waited" 60 env HAMU_FAULT=hang:1:5 HAMU_COLLECTIVE_TIMEOUT=3 "${MPIRUN[@]}" -np 2 "${F[@]}"
# The same inside the overlapped exchange (1 KB buckets: the collectives run on the communication thread).
expect_stop rank-dies-overlap nz "HAMU_FAULT: dying" 60 env HAMU_BUCKET_KB=1 HAMU_FAULT=die:1:9 "${MPIRUN[@]}" -np 2 "${F[@]}"
expect_stop rank-hangs-overlap nz "has waited" 60 env HAMU_BUCKET_KB=1 HAMU_FAULT=hang:1:9 HAMU_COLLECTIVE_TIMEOUT=3 \
  "${MPIRUN[@]}" -np 2 "${F[@]}"

echo "mpi_test: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
