#!/usr/bin/env bash
# tests/resume_test.sh: resumable runs (issue #15): `hamu train` and `hamu unlearn` killed with SIGKILL at
# random steps and continued with --resume end bitwise where an uninterrupted run ends: the checkpoint's
# tensor bytes (its metadata holds wall-clock times and the command line, which differ) and the --log CSV
# without its wall-clock column are compared with cmp. Bad states are refused with exit code 2.
#
# Run:   tests/resume_test.sh [path/to/hamu]      (default build/hamu; `make test` runs it)
#        RESUME_TEST_SEED=N tests/resume_test.sh  replays the kill points of a run (each run prints its seed)
#        RESUME_TEST_KEEP=1 ...                   keeps the scratch folder
# Two kinds of kill: HAMU_TEST_KILL_AT_STEP=k (hamu SIGKILLs itself right after the state of step k is on
# disk) and a real `kill -9` from here at random times, repeated until the run completes (rows and steps
# after the last state are lost and redone).
set -u

HAMU=${1:-build/hamu}
[[ -x $HAMU ]] || { echo "resume_test: $HAMU is not an executable (build it with make first)" >&2; exit 1; }
HAMU=$(cd "$(dirname "$HAMU")" && pwd)/$(basename "$HAMU")
QA=$(cd "$(dirname "$0")" && pwd)/fixtures/qa/tiny.jsonl
WORK=$(mktemp -d /tmp/hamu_resume_test.XXXXXX)
if [[ -n ${RESUME_TEST_KEEP:-} ]]; then echo "resume_test: scratch folder $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi
cd "$WORK" || exit 1

SEED=${RESUME_TEST_SEED:-$(( $(date +%s%N) % 1000000 ))}
RANDOM=$SEED
echo "resume_test: seed $SEED (RESUME_TEST_SEED=$SEED replays these kill points)"
export OMP_NUM_THREADS=1 HAMU_NO_PROGRESS=1
FAILED=0
PASSED=0
pass() { PASSED=$((PASSED + 1)); }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*" >&2; }

# ---- data: 4 classes of 8x8 images, each class a bright column band over seeded noise ----------------
# idx_file PATH MAGIC_BYTE DIMS...: the IDX header; the body is appended by the caller.
idx_header() { local path=$1 kind=$2 d; shift 2
  printf "\\x00\\x00\\x08\\x$kind" > "$path"
  for d in "$@"; do printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' 0 0 $((d >> 8)) $((d & 255)))" >> "$path"; done
}
make_split() {  # make_split PREFIX N: N images and their labels (label = index % 4)
  local prefix=$1 n=$2 i p y body labels=""
  idx_header "data/$prefix-images-idx3-ubyte" 03 "$n" 8 8
  idx_header "data/$prefix-labels-idx1-ubyte" 01 "$n"
  for ((i = 0; i < n; i++)); do
    y=$((i % 4)); body=""
    for ((p = 0; p < 64; p++)); do
      if (( p % 8 / 2 == y )); then body+=$(printf '\\x%02x' $(( 150 + (i * 31 + p * 17) % 100 )))
      else body+=$(printf '\\x%02x' $(( (i * 11 + p * 29) % 90 ))); fi
    done
    printf "$body" >> "data/$prefix-images-idx3-ubyte"
    labels+=$(printf '\\x%02x' "$y")
  done
  printf "$labels" >> "data/$prefix-labels-idx1-ubyte"
}
mkdir -p data && make_split train 60 && make_split t10k 20
cp -r data other && printf '\x07' | dd of=other/train-images-idx3-ubyte bs=1 seek=100 conv=notrunc status=none
D=idx:$WORK/data

# ---- helpers ---------------------------------------------------------------------------------------
tensors() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }  # the data after the header
same_tensors() { [[ -s $1 && -s $2 ]] && cmp -s <(tensors "$1") <(tensors "$2"); }
csv_no_clock() { cut -d, -f1,2,4- "$1"; }  # the log without its wall-clock "seconds" column
same_log() { cmp -s <(csv_no_clock "$1") <(csv_no_clock "$2"); }
rand_between() { echo $(( $1 + RANDOM % ($2 - $1 + 1) )); }

# kill_at_step NAME K OUT ARGS...: the run with HAMU_TEST_KILL_AT_STEP=K, then --resume to the end. Returns
# 1 (and fails NAME) unless the first part died by SIGKILL leaving a state and the resumed part completed.
kill_at_step() {
  local name=$1 k=$2 out=$3; shift 3
  rm -rf "$out" "$out.state" "$out.csv"
  # (In a subshell, so bash's "Killed" notice goes to /dev/null.)
  ( HAMU_TEST_KILL_AT_STEP=$k "$HAMU" "$@" --checkpoint-every 1 > /dev/null 2> killed.err; exit $? ) 2> /dev/null
  local rc=$?
  if [[ $rc -ne 137 || ! -s $out.state ]]; then fail "$name: killed at step $k: exit $rc, state $(ls "$out.state" 2>&1)"; return 1; fi
  if ! "$HAMU" "$@" --checkpoint-every 1 --resume > /dev/null 2> resumed.err; then
    fail "$name: resume after step $k failed: $(tail -2 resumed.err)"; return 1
  fi
  if ! grep -q "resuming from $out.state" resumed.err; then fail "$name: the resumed run did not say it resumed"; return 1; fi
  if [[ -e $out.state ]]; then fail "$name: the state file was left after the completed run"; return 1; fi
}

# kill_randomly NAME OUT SPAN_MS ARGS...: `kill -9` at random times within SPAN_MS, resuming each time from
# whatever state is on disk (or from the start when none is), until the run completes. Prints the kill count;
# on failure prints the reason to stderr and returns 1 (it runs in a command substitution, a subshell, so the
# caller counts the failure). SPAN_MS: half the uninterrupted run's time, so most tries are killed before
# they finish (a sanitizer build's run takes seconds, so the span may exceed one second).
kill_randomly() {
  local name=$1 out=$2 span_ms=$3; shift 3
  rm -f "$out" "$out.state" "$out.csv"
  local kills=0 resume=() rc pid
  while :; do
    "$HAMU" "$@" "${resume[@]}" > /dev/null 2> random.err &
    pid=$!
    sleep "$(awk -v ms="$(rand_between 20 "$span_ms")" 'BEGIN { printf "%.3f", ms / 1000 }')"
    kill -9 "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    rc=$?
    [[ $rc -eq 0 ]] && break
    if [[ $rc -ne 137 ]]; then echo "FAIL: $name: exit $rc: $(tail -2 random.err)" >&2; return 1; fi
    kills=$((kills + 1))
    if [[ -e $out.state ]]; then resume=(--resume); else resume=(); fi
    if [[ $kills -gt 60 ]]; then echo "FAIL: $name: not done after 60 kills" >&2; return 1; fi
  done
  echo "$kills"
}

# ---- hamu train -------------------------------------------------------------------------------------
T=(train --data "$D" --model mlp --epochs 3 --batch 8 --threads 1)   # 8 batches an epoch: 24 steps
"$HAMU" "${T[@]}" --out plain.st > /dev/null 2>&1 || { echo "resume_test: training failed" >&2; exit 1; }
"$HAMU" "${T[@]}" --out every.st --checkpoint-every 1 > /dev/null 2>&1
if same_tensors plain.st every.st && [[ ! -e every.st.state ]]; then pass
else fail "train --checkpoint-every 1 changed the result or left its state"; fi
for i in 1 2 3; do
  k=$(rand_between 1 23)
  kill_at_step "train mlp k=$k" "$k" t.st "${T[@]}" --out t.st &&
    { same_tensors plain.st t.st && pass || fail "train mlp killed after step $k: the resumed checkpoint differs"; }
done
# BatchNorm (running statistics, counters) and SGD momentum buffers.
TC=(train --data "$D" --model cnn --epochs 2 --batch 8 --optimizer sgd --threads 1)
"$HAMU" "${TC[@]}" --out cnn.st > /dev/null 2>&1
k=$(rand_between 1 15)
kill_at_step "train cnn k=$k" "$k" tc.st "${TC[@]}" --out tc.st &&
  { same_tensors cnn.st tc.st && pass || fail "train cnn/sgd killed after step $k: the resumed checkpoint differs"; }

# ---- hamu unlearn -----------------------------------------------------------------------------------
"$HAMU" train --data "$D" --model mlp --epochs 2 --batch 8 --split class=1 --threads 1 --out orig.st > /dev/null 2>&1
U=(unlearn --model orig.st --steps 16 --batch 8 --forget-batch 4 --eval-every 5 --eval-samples 10 --threads 1)
for m in "hamu-q" "hamu-u --scope global" "scrub" "npo" "gdiff --optimizer adamw" "hamu-q --stop kappa --stop-check-every 3" "ga --stop mia --stop-check-every 4 --stop-samples 8" \
         "gdiff --stop auto --stop-check-every 2 --stop-retain-tol 0.01"; do
  read -r -a M <<< "--method $m"
  "$HAMU" "${U[@]}" "${M[@]}" --out ref.st --log ref.csv > /dev/null 2>&1
  last=$(grep -c '^step' ref.csv)
  if [[ $last -lt 2 ]]; then fail "unlearn $m: the reference run made $last steps"; continue; fi
  k=$(rand_between 1 $((last - 1)))
  kill_at_step "unlearn $m k=$k" "$k" u.st "${U[@]}" "${M[@]}" --out u.st --log u.st.csv || continue
  if same_tensors ref.st u.st && same_log ref.csv u.st.csv; then pass
  else fail "unlearn $m killed after step $k: the resumed checkpoint or log differs"; fi
done

# ---- text: a causal LM trained from scratch, a LoRA adapter with dropout on it, text unlearning ----------
TX=(train --data "qa:$QA" --model gpt-small --vocab 300 --max-length 32 --split fraction=0.3 --batch 4 --threads 1)
"$HAMU" "${TX[@]}" --epochs 3 --out lm > /dev/null 2>&1 || { echo "resume_test: text training failed" >&2; exit 1; }
k=$(rand_between 1 8)   # 3 steps an epoch
kill_at_step "text train k=$k" "$k" lm_k "${TX[@]}" --epochs 3 --out lm_k &&
  { same_tensors lm/model.safetensors lm_k/model.safetensors && pass || fail "text train killed after step $k: the resumed model differs"; }
TXL=(train --data "qa:$QA" --model lm --lora r=4,alpha=8,dropout=0.3 --max-length 32 --split fraction=0.3 --batch 4 --epochs 2 --threads 1)
"$HAMU" "${TXL[@]}" --out lora > /dev/null 2>&1
k=$(rand_between 1 5)
kill_at_step "text LoRA train k=$k" "$k" lora_k "${TXL[@]}" --out lora_k &&
  { same_tensors lora/adapter_model.safetensors lora_k/adapter_model.safetensors && pass ||
    fail "LoRA training with dropout killed after step $k: the resumed adapter differs"; }
for m in hamu-q npo; do
  TU=(unlearn --model lm --method "$m" --steps 8 --batch 4 --forget-batch 2 --max-length 32 --eval-every 3 --gen-samples 0 --show 0 --threads 1)
  "$HAMU" "${TU[@]}" --out tref --log tref.csv > /dev/null 2>&1
  k=$(rand_between 1 7)
  kill_at_step "text unlearn $m k=$k" "$k" tu "${TU[@]}" --out tu --log tu.csv &&
    { if same_tensors tref/model.safetensors tu/model.safetensors && same_log tref.csv tu.csv; then pass
      else fail "text unlearn $m killed after step $k: the resumed model or log differs"; fi; }
done

# ---- real kill -9 at random times, repeatedly; states every few steps so work after them is redone ----
UL=(unlearn --model orig.st --method hamu-q --steps 150 --batch 8 --forget-batch 4 --eval-every 40 --eval-samples 10 --threads 1
    --stop none)  # all 150 steps: a stopping rule would end the run in a few steps, shorter than a startup
start=$(date +%s%N)
"$HAMU" "${UL[@]}" --out long.st --log long.csv --checkpoint-every 3 > /dev/null 2>&1
span=$(( ($(date +%s%N) - start) / 2000000 )); span=$(( span < 40 ? 40 : span > 30000 ? 30000 : span ))
if kills=$(kill_randomly "unlearn kill -9" lk.st "$span" "${UL[@]}" --out lk.st --log lk.st.csv --checkpoint-every 3); then
  if same_tensors long.st lk.st && same_log long.csv lk.st.csv; then pass; echo "resume_test: unlearn killed $kills times, resumed to the same bytes"
  else fail "unlearn killed $kills times by kill -9: the resumed checkpoint or log differs"; fi
else
  FAILED=$((FAILED + 1))
fi
TL=(train --data "$D" --model mlp --epochs 12 --batch 8 --threads 1)
start=$(date +%s%N)
"$HAMU" "${TL[@]}" --out tlong.st --checkpoint-every 4 > /dev/null 2>&1
span=$(( ($(date +%s%N) - start) / 2000000 )); span=$(( span < 40 ? 40 : span > 30000 ? 30000 : span ))
if kills=$(kill_randomly "train kill -9" tk.st "$span" "${TL[@]}" --out tk.st --checkpoint-every 4); then
  if same_tensors tlong.st tk.st; then pass; echo "resume_test: train killed $kills times, resumed to the same bytes"
  else fail "train killed $kills times by kill -9: the resumed checkpoint differs"; fi
else
  FAILED=$((FAILED + 1))
fi

# ---- bad states: exit code 2 and an error naming the file or the option --------------------------------
expect_refused() {  # expect_refused NAME WANT ARGS...
  local name=$1 want=$2; shift 2
  "$HAMU" "$@" > /dev/null 2> refused.err
  local rc=$?
  if [[ $rc -eq 2 ]] && grep -qF -- "$want" refused.err; then pass
  else fail "$name: exit $rc (want 2), stderr: $(tail -2 refused.err) (wanted '$want')"; fi
}
rm -f s.st s.st.state
( HAMU_TEST_KILL_AT_STEP=4 "$HAMU" "${U[@]}" --method hamu-q --out s.st --log s.csv --checkpoint-every 2 > /dev/null 2>&1; exit $? ) 2> /dev/null
cp s.st.state good.state
expect_refused no-state        "no state file"   "${U[@]}" --method hamu-q --out none.st --resume
expect_refused other-lr        "--lr"            "${U[@]}" --method hamu-q --out s.st --state good.state --resume --lr 0.5
expect_refused other-method    "--method"        "${U[@]}" --method ga --out s.st --state good.state --resume
expect_refused other-threads   "--threads"       "${U[@]:0:${#U[@]}-2}" --method hamu-q --out s.st --state good.state --resume --threads 2
expect_refused other-data      "data"            "${U[@]}" --data "idx:$WORK/other" --method hamu-q --out s.st --state good.state --resume
expect_refused train-state     "cannot resume"   "${T[@]}" --out s2.st --state good.state --resume
printf 'X' | dd of=s.csv bs=1 seek=0 conv=notrunc status=none
expect_refused changed-log     "--log"           "${U[@]}" --method hamu-q --out s.st --log s.csv --state good.state --resume
printf 'not a state file, only text long enough to have a header length\n' > corrupt.state
expect_refused corrupt-state   "corrupt.state"   "${U[@]}" --method hamu-q --out s.st --state corrupt.state --resume
head -c 400 good.state > truncated.state
expect_refused truncated-state "truncated.state" "${U[@]}" --method hamu-q --out s.st --state truncated.state --resume
expect_refused state-no-flag   "--state"         "${U[@]}" --method hamu-q --out s.st --state good.state
expect_refused state-is-out    "--state"         "${U[@]}" --method hamu-q --out s.st --state s.st --checkpoint-every 2

echo "resume_test: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
