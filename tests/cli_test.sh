#!/usr/bin/env bash
# tests/cli_test.sh: bad-input tests of the `hamu` command (DESIGN.md "Errors and bad input").
#
# Run:   tests/cli_test.sh [path/to/hamu]        (default build/hamu; `make test` runs it after the unit tests)
#        CLI_TEST_VERBOSE=1 tests/cli_test.sh ...  also prints every error message checked
#        CLI_TEST_KEEP=1 tests/cli_test.sh ...     keeps the scratch folder (data, checkpoints, outputs)
#
# Every bad invocation must exit with code 2, print one line on stderr that says what is wrong (naming
# the flag or the file), and write nothing (no --out, --log, --json or --svg file, no temporary file).
# The data is a tiny synthetic IDX set written here with printf (bash and coreutils only), and the
# checkpoints are one-epoch models on it, so the whole script takes a few seconds.
set -u

HAMU=${1:-build/hamu}
[[ -x $HAMU ]] || { echo "cli_test: $HAMU is not an executable (build it with make first)" >&2; exit 1; }
HAMU=$(cd "$(dirname "$HAMU")" && pwd)/$(basename "$HAMU")

WORK=$(mktemp -d /tmp/hamu_cli_test.XXXXXX)
if [[ -n ${CLI_TEST_KEEP:-} ]]; then echo "cli_test: scratch folder $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi
cd "$WORK" || exit 1

FAILED=0
PASSED=0
export OMP_NUM_THREADS=1  # tiny data: one thread is fastest and immune to busy neighbours

# ---- tiny IDX data sets --------------------------------------------------------------------------

# Four bytes, big-endian.
be32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"; }

# write_idx DIR PREFIX N SIZE: N images of SIZExSIZE whose labels cycle 0, 1, 3 (class 2 never occurs,
# so the data has 4 classes and class=2 selects nothing). Each class lights its own band of rows.
write_idx() {
  local dir=$1 prefix=$2 n=$3 size=$4 i y r c px labels=(0 1 3)
  mkdir -p "$dir"
  { printf '\x00\x00\x08\x03'; be32 "$n"; be32 "$size"; be32 "$size"
    for ((i = 0; i < n; i++)); do
      y=${labels[i % 3]}
      local fmt=""
      for ((r = 0; r < size; r++)); do
        for ((c = 0; c < size; c++)); do
          if (( r % 4 == y )); then px=$(( 200 + (i * 7 + c) % 50 )); else px=$(( (i * 13 + r * 5 + c * 3) % 40 )); fi
          fmt+=$(printf '\\x%02x' "$px")
        done
      done
      printf "$fmt"
    done
  } > "$dir/$prefix-images-idx3-ubyte"
  { printf '\x00\x00\x08\x01'; be32 "$n"
    for ((i = 0; i < n; i++)); do printf "$(printf '\\x%02x' "${labels[i % 3]}")"; done
  } > "$dir/$prefix-labels-idx1-ubyte"
}

write_idx data train 48 8
write_idx data t10k 24 8
cp -r data other            # same shape and labels, another data set as far as a checkpoint is concerned
write_idx big train 30 12   # another image size
write_idx big t10k 15 12

# ---- helpers -------------------------------------------------------------------------------------

pass() { PASSED=$((PASSED + 1)); }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*" >&2; }

# must_make NAME ARGS...: a command that has to succeed (setting up checkpoints).
must_make() {
  local name=$1; shift
  if ! "$HAMU" "$@" > "log_$name.out" 2> "log_$name.err"; then
    echo "cli_test: setup step '$name' failed: $HAMU $*" >&2
    cat "log_$name.err" >&2
    exit 1
  fi
}

# expect_bad NAME WANT ARGS...: exit code 2, exactly one stderr line that contains WANT, and out/ stays empty.
expect_bad() {
  local name=$1 want=$2; shift 2
  rm -rf out && mkdir out
  "$HAMU" "$@" > stdout.txt 2> stderr.txt
  local rc=$? lines
  lines=$(wc -l < stderr.txt)
  if [[ $rc -ne 2 ]]; then
    fail "$name: exit code $rc, expected 2 ($HAMU $*)"; sed 's/^/    /' stderr.txt >&2; return
  fi
  if [[ $lines -ne 1 ]]; then
    fail "$name: $lines lines on stderr, expected one"; sed 's/^/    /' stderr.txt >&2; return
  fi
  if grep -qF -- "given twice" stderr.txt || ! grep -qF -- "$want" stderr.txt; then
    fail "$name: the error does not mention '$want': $(cat stderr.txt)"; return
  fi
  if [[ -n $(ls -A out) ]]; then
    fail "$name: files were written: $(ls -A out | tr '\n' ' ')"; return
  fi
  [[ -n ${CLI_TEST_VERBOSE:-} ]] && printf '%-24s %s\n' "$name" "$(cat stderr.txt)"
  pass
}

# ---- checkpoints ---------------------------------------------------------------------------------

D=idx:$WORK/data
TRAIN=(--epochs 1 --batch 16 --threads 1)
must_make orig    train --data "$D" --model mlp --split class=1 "${TRAIN[@]}" --out orig.safetensors
must_make ref     train --data "$D" --model mlp --split class=1 --subset retain "${TRAIN[@]}" --out ref.safetensors
must_make ref_cnn train --data "$D" --model cnn --split class=1 --subset retain "${TRAIN[@]}" --out ref_cnn.safetensors
must_make ref_oth train --data "idx:$WORK/other" --model mlp --split class=1 --subset retain "${TRAIN[@]}" --out ref_other.safetensors
printf 'not a checkpoint at all, just some text that is long enough\n' > corrupt.safetensors
head -c 200 orig.safetensors > truncated.safetensors
printf '# only a comment\n\n' > empty_indices.txt

# The rest of a valid invocation; each case adds or replaces one thing.
U=(unlearn --model orig.safetensors --data "$D" --batch 8 --forget-batch 8 --threads 1
   --out out/u.safetensors --log out/u.csv --json out/u.json)
S=(--split class=1)
N=(--steps 3)

# ---- hamu unlearn ---------------------------------------------------------------------------------

expect_bad unknown-method      "--method"    "${U[@]}" "${S[@]}" "${N[@]}" --method forget-everything
expect_bad ratio-above-1       "--ratio"     "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --ratio 2
expect_bad negative-lr         "--lr"        "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --lr -1
expect_bad zero-lr             "--lr"        "${U[@]}" "${S[@]}" "${N[@]}" --method ga --lr 0
expect_bad negative-steps      "--steps"     "${U[@]}" "${S[@]}" --method hamu-q --steps -5
expect_bad zero-steps          "--steps"     "${U[@]}" "${S[@]}" --method gdiff --steps 0
expect_bad lr-not-a-number     "--lr"        "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --lr fast
expect_bad reference-arch      "--reference" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --reference ref_cnn.safetensors
expect_bad reference-data      "--reference" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --reference ref_other.safetensors
expect_bad empty-forget-class  "--split"     "${U[@]}" "${N[@]}" --method hamu-q --split class=2
expect_bad empty-forget-file   "--split"     "${U[@]}" "${N[@]}" --method hamu-q --split "indices=$WORK/empty_indices.txt"
expect_bad missing-model       "nothere.safetensors"   "${U[@]/orig.safetensors/nothere.safetensors}" "${S[@]}" "${N[@]}" --method hamu-q
expect_bad corrupt-model       "corrupt.safetensors"   "${U[@]/orig.safetensors/corrupt.safetensors}" "${S[@]}" "${N[@]}" --method hamu-q
expect_bad truncated-model     "truncated.safetensors" "${U[@]/orig.safetensors/truncated.safetensors}" "${S[@]}" "${N[@]}" --method hamu-q
expect_bad unknown-scope       "--scope"     "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --scope everywhere
expect_bad unknown-split-rule  "--constraint-split" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --constraint-split fair
expect_bad unknown-flag        "--forget-harder" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --forget-harder
expect_bad cuda-graph-on-cpu   "--cuda-graph" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --cuda-graph
expect_bad out-folder-missing  "--out"       unlearn --model orig.safetensors --data "$D" "${S[@]}" --method ga --out nowhere/u.safetensors
expect_bad overwrite-input     "--out: refusing to overwrite the input checkpoint" unlearn --model orig.safetensors --data "$D" "${S[@]}" --method ga --out orig.safetensors
expect_bad unknown-stop-rule   "--stop"      "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --stop soon
expect_bad stop-conflict       "--stop-on-criterion" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --stop mia --stop-on-criterion
expect_bad stop-check-zero     "--stop-check-every"  "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --stop mia --stop-check-every 0
expect_bad stop-retain-tol     "--stop-retain-tol"   "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --stop retain-rise --stop-retain-tol -1
# Reference-free stopping end to end: gradient ascent at a large lr lifts the forget loss past the held-out
# test losses of its class within a few steps; the reason lands in the JSON and on the CSV's last step row.
rm -rf out && mkdir out
if "$HAMU" "${U[@]}" "${S[@]}" --method ga --lr 0.5 --steps 60 --stop loss-rise --stop-check-every 2 >stdout.txt 2>stderr.txt &&
   grep -q '"stop_reason": *"loss_rise"' out/u.json && grep '^step' out/u.csv | tail -1 | grep -q ',loss_rise$' &&
   awk -F, '$1 == "step" && $(NF-3) != ""' out/u.csv | grep -q .; then pass
else fail "unlearn --stop loss-rise: did not stop with loss_rise ($(cat stdout.txt stderr.txt | tail -3))"; fi
# retain-rise: the same ascent raises the retain loss too; measured against the original model's retain probe
# (taken before the first step, recorded in the JSON options).
rm -rf out && mkdir out
if "$HAMU" "${U[@]}" "${S[@]}" --method ga --lr 0.5 --steps 60 --stop retain-rise --stop-check-every 2 >stdout.txt 2>stderr.txt &&
   grep -q '"stop_reason": *"retain_rise"' out/u.json && grep -q '"stop_retain_tol": *0.05' out/u.json &&
   grep -q 'the retain loss rose more than 5% above' stdout.txt && grep '^step' out/u.csv | tail -1 | grep -q ',retain_rise$'; then pass
else fail "unlearn --stop retain-rise: did not stop with retain_rise ($(cat stdout.txt stderr.txt | tail -3))"; fi

# ---- hamu compare ---------------------------------------------------------------------------------

C=(compare --model orig.safetensors --reference ref.safetensors --data "$D" --batch 8 --forget-batch 8 --threads 1
   --json out/c.json --svg out/c.svg)
expect_bad compare-unknown-method "--methods"   "${C[@]}" "${S[@]}" "${N[@]}" --methods hamu-q,ft,unlearn-harder
expect_bad compare-repeated       "--methods"   "${C[@]}" "${S[@]}" "${N[@]}" --methods ga,ga
expect_bad compare-ratio          "--ratio"     "${C[@]}" "${S[@]}" "${N[@]}" --methods ft,hamu-u --ratio 1.5
expect_bad compare-steps          "--steps"     "${C[@]}" "${S[@]}" --methods ft --steps 0
expect_bad compare-reference-arch "--reference" "${C[@]/ref.safetensors/ref_cnn.safetensors}" "${S[@]}" "${N[@]}" --methods ga
expect_bad compare-reference-data "--reference" "${C[@]/ref.safetensors/ref_other.safetensors}" "${S[@]}" "${N[@]}" --methods ga
expect_bad compare-empty-forget   "--split"     "${C[@]}" "${N[@]}" --methods ga --split class=2
expect_bad compare-no-reference   "--reference" compare --model orig.safetensors --data "$D" "${S[@]}" --methods ga

# ---- hamu train and hamu eval --------------------------------------------------------------------

expect_bad train-unknown-arch     "--model"  train --data "$D" --model transformer-xxl --out out/t.safetensors
expect_bad train-retain-no-split  "--split"  train --data "$D" --model mlp --subset retain --out out/t.safetensors
expect_bad train-zero-epochs      "--epochs" train --data "$D" --model mlp --epochs 0 --out out/t.safetensors
expect_bad train-cuda-graph-cpu   "--cuda-graph" train --data "$D" --model mlp --cuda-graph --out out/t.safetensors
expect_bad train-unknown-data     "--data"   train --data "floppy:$WORK/data" --model mlp --out out/t.safetensors
expect_bad train-missing-data     "not found" train --data "idx:$WORK/nothing" --model mlp --out out/t.safetensors
expect_bad train-no-out           "--out"    train --data "$D" --model mlp
expect_bad eval-other-shape       "does not match" eval --model orig.safetensors --data "idx:$WORK/big" --split class=1 --json out/e.json
expect_bad eval-reference-arch    "--reference" eval --model orig.safetensors --data "$D" --split class=1 --reference ref_cnn.safetensors --json out/e.json
expect_bad eval-corrupt           "corrupt.safetensors" eval --model corrupt.safetensors --data "$D" --json out/e.json
expect_bad eval-cuda-graph-cpu    "--cuda-graph" eval --model orig.safetensors --data "$D" --cuda-graph --json out/e.json
expect_bad misspelled-flag        "did you mean --steps?" "${U[@]}" "${S[@]}" --setps 3
expect_bad seed-out-of-range      "--seed"   train --data "$D" --model mlp --seed 9223372036854775808 --out out/t.safetensors

# ---- hostile files (issue #15): each is refused at load with the file named, nothing written --------

# write_pgm FILE W H: a binary PGM of W x H grey pixels (W or H may be 0: the zero-size reproducer).
write_pgm() { { printf 'P5 %d %d 255\n' "$2" "$3"; head -c $(($2 * $3)) /dev/urandom; } > "$1"; }
mkdir -p zimg/a zimg/b zfirst/a zfirst/b jimg/a jimg/b
write_pgm zimg/a/0.pgm 4 4; write_pgm zimg/a/1.pgm 0 16; write_pgm zimg/b/0.pgm 4 4
write_pgm zfirst/a/0.pgm 0 16; write_pgm zfirst/a/1.pgm 4 4; write_pgm zfirst/b/0.pgm 4 4
write_pgm jimg/a/0.pgm 4 4; write_pgm jimg/b/0.pgm 4 4
printf '\xff\xd8\xff\xc4\xac\xee\x11\xac\xee' > jimg/a/1.jpg   # Huffman counts > 256: UB in stb_image 2.27
T=(--model mlp --epochs 1 --threads 1 --out out/t.safetensors)
expect_bad zero-width-image       "zimg/a/1.pgm"  train --data "images:$WORK/zimg" "${T[@]}"
expect_bad zero-width-image-size  "zimg/a/1.pgm"  train --data "images:$WORK/zimg,size=8x8" "${T[@]}"
expect_bad zero-width-image-first "zfirst/a/0.pgm" train --data "images:$WORK/zfirst" "${T[@]}"
expect_bad jpeg-huffman-counts    "jimg/a/1.jpg"  train --data "images:$WORK/jimg" "${T[@]}"

# A gzip IDX whose header claims 2^34 bytes (1 x 131072 x 131072) over 8 MiB of zeros.
mkdir -p bomb && cp data/train-labels-idx1-ubyte data/t10k-* bomb/
{ printf '\x00\x00\x08\x03'; be32 1; be32 131072; be32 131072; head -c 8388608 /dev/zero; } | gzip -c > bomb/train-images-idx3-ubyte.gz
expect_bad gzip-idx-claims-16g    "train-images-idx3-ubyte.gz" train --data "idx:$WORK/bomb" "${T[@]}"
mkdir -p bigdim && cp data/train-labels-idx1-ubyte data/t10k-* bigdim/
{ printf '\x00\x00\x08\x03'; be32 2147483648; be32 2; be32 2; } > bigdim/train-images-idx3-ubyte
expect_bad idx-dim-2e31           "2147483648"    train --data "idx:$WORK/bigdim" "${T[@]}"
export HAMU_MAX_MEMORY=1K
expect_bad memory-limit           "train-images-idx3-ubyte" train --data "$D" "${T[@]}"
export HAMU_MAX_MEMORY=lots
expect_bad memory-limit-syntax    "HAMU_MAX_MEMORY" train --data "$D" "${T[@]}"
unset HAMU_MAX_MEMORY

# 120 bytes of metadata describing a million-class cnn on 1000x1000 inputs: refused before building.
meta='{"__metadata__":{"arch":"cnn","height":"1000","in_channels":"1000000","num_classes":"1000000","width":"1000"}}'
while (( ${#meta} % 8 )); do meta+=' '; done
{ printf "$(printf '\\x%02x' $((${#meta} & 255)) $((${#meta} >> 8)) 0 0 0 0 0 0)"; printf '%s' "$meta"; } > huge_meta.safetensors
expect_bad metadata-huge-model    "huge_meta.safetensors" eval --model huge_meta.safetensors --data "$D" --json out/e.json
# One NaN weight (the last 4 bytes of the data buffer): refused naming the tensor, also by unlearn.
cp orig.safetensors nan.safetensors
printf '\x00\x00\xc0\x7f' | dd of=nan.safetensors bs=1 seek=$(( $(stat -c %s nan.safetensors) - 4 )) conv=notrunc 2>/dev/null
expect_bad nan-weight-eval        "non-finite"    eval --model nan.safetensors --data "$D" --json out/e.json
expect_bad nan-weight-unlearn     "nan.safetensors" "${U[@]/orig.safetensors/nan.safetensors}" "${S[@]}" "${N[@]}" --method hamu-q

# ---- good runs: the same invocations without the fault do write their outputs ---------------------

rm -rf out && mkdir out
if "$HAMU" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --reference ref.safetensors > unlearn.out 2> unlearn.err &&
   [[ -s out/u.safetensors && -s out/u.csv && -s out/u.json ]]; then
  pass
else
  fail "unlearn on good input did not write --out, --log and --json"; cat unlearn.err >&2
fi

rm -rf out && mkdir out
if "$HAMU" "${C[@]}" "${S[@]}" "${N[@]}" --methods hamu-q,ga,kl --eval-every 1 --eval-samples 0 > compare.out 2> compare.err; then
  if [[ -s out/c.json && -s out/c.svg ]] && grep -q '"trajectory"' out/c.json && grep -q '<polyline' out/c.svg &&
     grep -q '^retrained' compare.out && grep -q '^hamu-q' compare.out; then
    pass
  else
    fail "compare: missing output (json, svg or table rows)"; cat compare.out >&2
  fi
else
  fail "compare on good input failed"; cat compare.err >&2
fi

# ---- figures: hamu hardness --svg on good input; the good runs' SVGs render (tests/svg_test.sh) ----------

if "$HAMU" hardness --model orig.safetensors --data "$D" "${S[@]}" --threads 1 --json out/h.json --svg out/h.svg \
     > hardness.out 2> hardness.err && [[ -s out/h.json && -s out/h.svg ]]; then
  pass
else
  fail "hardness on good input did not write --json and --svg"; cat hardness.err >&2
fi
svg_test=$(dirname "${BASH_SOURCE[0]}")/svg_test.sh
[[ $svg_test == /* ]] || svg_test=$OLDPWD/$svg_test  # this script cd'd into its scratch folder
if "$svg_test" out/*.svg > svg_test.out 2>&1; then pass; else fail "figures do not render: $(cat svg_test.out)"; fi

# ---- language models: hamu generate and hamu eval on a Hugging Face directory (tests/fixtures/lm_text) ---

LM_FIX=$(dirname "${BASH_SOURCE[0]}")/fixtures
[[ $LM_FIX == /* ]] || LM_FIX=$OLDPWD/$LM_FIX  # this script cd'd into its scratch folder
LM=$LM_FIX/lm_text/gpt2
QA=$LM_FIX/qa/tiny.jsonl
mkdir -p lm_notok lm_empty && cp "$LM/config.json" "$LM/model.safetensors" lm_notok/
G=(generate --threads 1 --max-new-tokens 4)
expect_bad gen-missing-dir     "does not exist"      "${G[@]}" --model nowhere --prompt hi --json out/g.json
expect_bad gen-not-hf-dir      "config.json"         "${G[@]}" --model lm_empty --prompt hi --json out/g.json
expect_bad gen-no-tokenizer    "tokenizer.json"      "${G[@]}" --model lm_notok --prompt hi --json out/g.json
expect_bad gen-unknown-tmpl    "--template: unknown" "${G[@]}" --model "$LM" --prompt hi --template alpaca --json out/g.json
expect_bad gen-tmpl-no-tokens  "chatml"              "${G[@]}" --model "$LM_FIX/lm_text/llama" --prompt hi --template chatml --json out/g.json
expect_bad gen-no-prompt       "--prompt"            "${G[@]}" --model "$LM" --json out/g.json
expect_bad gen-two-prompts     "--prompt"            "${G[@]}" --model "$LM" --prompt hi --prompts "$QA" --json out/g.json
expect_bad gen-prompts-missing "--prompts"           "${G[@]}" --model "$LM" --prompts nowhere.jsonl --json out/g.json
expect_bad gen-too-long        "tiny.jsonl:10: the question"       "${G[@]}" --model "$LM" --prompts "$QA" --json out/g.json
expect_bad gen-zero-new        "--max-new-tokens"    generate --threads 1 --model "$LM" --prompt hi --max-new-tokens 0 --json out/g.json
E=(eval --threads 1 --model "$LM")
expect_bad eval-lm-image-data  "--data"              "${E[@]}" --data "$D" --json out/e.json
expect_bad eval-lm-missing-qa  "nowhere.jsonl"       "${E[@]}" --data qa:nowhere.jsonl --json out/e.json
expect_bad eval-lm-template    "--template: unknown"    "${E[@]}" --data "qa:$QA" --template alpaca --json out/e.json
expect_bad eval-lm-no-tokenizer "tokenizer.json"     eval --threads 1 --model lm_notok --data "qa:$QA" --json out/e.json
# Hugging Face configs with what hamu does not implement: refused at load, naming the key.
mkdir -p lm_longrope lm_silu
cp "$LM_FIX/lm_text/llama/model.safetensors" "$LM_FIX/lm_text/llama/tokenizer.json" lm_longrope/
sed 's#"rope_type": "default"#"rope_type": "longrope", "factor": 2.0#' "$LM_FIX/lm_text/llama/config.json" > lm_longrope/config.json
cp "$LM/model.safetensors" "$LM/tokenizer.json" lm_silu/
sed 's#"activation_function": "gelu_new"#"activation_function": "silu"#' "$LM/config.json" > lm_silu/config.json
expect_bad eval-lm-longrope    "rope_parameters.rope_type 'longrope' is not supported" eval --threads 1 --model lm_longrope --data "qa:$QA" --json out/e.json
expect_bad gen-lm-activation   "activation_function 'silu' is not supported" "${G[@]}" --model lm_silu --prompt hi --json out/g.json

rm -rf out && mkdir out
if "$HAMU" generate --threads 1 --model "$LM_FIX/lm_text/llama" --prompts "$QA" --max-new-tokens 8 --json out/g.json \
     > gen.out 2> gen.err && grep -q '^Q: Who wrote' gen.out && grep -q '^A: ' gen.out &&
   grep -q '"stopped"' out/g.json && [[ $(grep -c '"question"' out/g.json) -eq 10 ]]; then
  pass
else
  fail "generate on good input: $(cat gen.err)"
fi
# Every eos id of generation_config.json stops a row, as in transformers' generate() (tests/fixtures/lm_stop: rows
# 2 and 4 stop at ids 26 and 298 after 5 and 3 tokens; </s> alone would let all four run to 12).
printf '{"question": "%s"}\n' "Is the data always retained?" "How many novels has Alice written?" "Who wrote it?" \
  "Why did the author move to London, and when?" > stop_q.jsonl
if "$HAMU" generate --threads 1 --model "$LM_FIX/lm_stop/llama" --prompts stop_q.jsonl --max-new-tokens 12 --json out/gs.json \
     > gen_stop.out 2> gen_stop.err && grep -q '"stop_ids": \[2, 26, 298\]' out/gs.json &&
   [[ $(grep -o '"tokens": [0-9]*\|"stopped": "[a-z]*"' out/gs.json | tr '\n' ' ') == \
      '"tokens": 12 "stopped": "length" "tokens": 5 "stopped": "end" "tokens": 12 "stopped": "length" "tokens": 3 "stopped": "end" "tokens": 32 ' ]]; then
  pass
else
  fail "generate stops at generation_config.json's eos ids: $(cat gen_stop.err)"
fi
mkdir -p lm_badgen && cp "$LM_FIX/lm_stop/llama/"{config.json,model.safetensors,tokenizer.json} lm_badgen/
echo '{"eos_token_id": [2, "26"]}' > lm_badgen/generation_config.json
expect_bad gen-bad-generation-config "generation_config.json: field 'eos_token_id'" "${G[@]}" --model lm_badgen --prompt hi --json out/g.json
# A field that changes transformers' greedy ids but that hamu does not apply: generated, with a warning naming it.
echo '{"eos_token_id": [2, 26], "num_beams": 4, "temperature": 0.6}' > lm_badgen/generation_config.json
if "$HAMU" generate --threads 1 --max-new-tokens 2 --model lm_badgen --prompt hi > gen_warn.out 2> gen_warn.err &&
   grep -q "warning: .*generation_config.json sets num_beams=4, which hamu's greedy decoding does not apply" gen_warn.err &&
   ! grep -q temperature gen_warn.err; then
  pass
else
  fail "generate warns about generation_config.json fields it does not apply: $(cat gen_warn.err)"
fi
# A model trained from that directory keeps its generation_config.json (as transformers' save_pretrained does), so it
# stops where its base stops.
if "$HAMU" train --threads 1 --model "$LM_FIX/lm_stop/llama" --data "qa:$QA" --epochs 1 --batch 5 \
     --out out/stop_ft > stop_ft.out 2> stop_ft.err && cmp -s out/stop_ft/generation_config.json "$LM_FIX/lm_stop/llama/generation_config.json"; then
  pass
else
  fail "a model trained from a directory with generation_config.json keeps it: $(tail -2 stop_ft.err)"
fi
if "$HAMU" eval --threads 1 --model "$LM" --data "qa:$QA" --json out/e.json > eval_lm.out 2> eval_lm.err &&
   grep -q '"all"' out/e.json && grep -q '"tokens": 115' out/e.json && grep -q '"truncated": 1' out/e.json &&
   grep -q '^all ' eval_lm.out && grep -q 'truncated' eval_lm.err; then
  pass
else
  fail "eval of a language model on good input: $(cat eval_lm.err)"
fi
# --reference: a model against itself has zero gaps and a KS D of 0; one with another tokenizer is refused.
if "$HAMU" eval --threads 1 --model "$LM" --data "qa:$QA" --split fraction=0.3 --reference "$LM" --json out/er.json \
     > eval_ref.out 2> eval_ref.err && grep -q '^forget .* 0.00$' eval_ref.out && grep -q 'avg 0.00 points over 2 splits' eval_ref.out &&
   grep -q '"avg_gap": 0,' out/er.json && grep -q '"statistic": 0,' out/er.json && grep -q '"split": "forget"' out/er.json; then
  pass
else
  fail "eval of a language model with --reference: $(cat eval_ref.err)"
fi
expect_bad eval-lm-ref-tokenizer "tokenizes the all split differently" "${E[@]}" --data "qa:$QA" --reference "$LM_FIX/lm_text/llama" --json out/e.json
# eval and generate prompt a model in the template its hamu.json records (what it was trained with) unless --template
# says otherwise, as unlearn, compare and hardness do; a text run without a test (or forget) set prints no rows for it.
mkdir -p lm_l2chat && cp "$LM/"{config.json,model.safetensors,tokenizer.json} lm_l2chat/
echo '{"template": "llama2-chat"}' > lm_l2chat/hamu.json
rm -rf out && mkdir out
if "$HAMU" eval --threads 1 --model lm_l2chat --data "qa:$QA" --json out/et.json > tmpl.out 2> tmpl.err &&
   grep -q '"template": "llama2-chat"' out/et.json && grep -q ', template llama2-chat, split all' tmpl.out &&
   "$HAMU" eval --threads 1 --model lm_l2chat --data "qa:$QA" --template plain --json out/ep.json >> tmpl.out 2>> tmpl.err &&
   grep -q '"template": "plain"' out/ep.json &&
   "$HAMU" generate --threads 1 --max-new-tokens 2 --model lm_l2chat --prompt hi --json out/gt.json >> tmpl.out 2>> tmpl.err &&
   grep -q '"template": "llama2-chat"' out/gt.json &&
   "$HAMU" train --threads 1 --model "$LM" --data "qa:$QA" --split fraction=0.3 --epochs 1 --batch 5 --out out/nt > nt.out 2> nt.err &&
   grep -q '^retain accuracy' nt.out && ! grep -q '^test \|forget-vs-test\|forget-test' nt.out && ! grep -q ', test ' nt.err &&
   "$HAMU" compare --threads 1 --model out/nt --reference out/nt --force-reference --methods ga --steps 1 --batch 4 \
     --forget-batch 2 --gen-samples 0 > ntc.out 2> ntc.err && grep -q '^ga  .* - .* - .* - ' ntc.out && ! grep -q ', test ' ntc.err; then
  pass
else
  fail "eval/generate take the template of the model's hamu.json; no test rows without a test set: $(tail -2 tmpl.err nt.err)"
fi
# An image model given to a text command and a language model to an image command: the flag and the mix-up named.
expect_bad hard-lm-image-data   "--data: $LM is a language model" hardness --threads 1 --model "$LM" --data "$D" --json out/h.json
expect_bad eval-ref-lm-dir      "--reference: $LM is a language model directory" eval --threads 1 --model orig.safetensors --data "$D" --reference "$LM" --json out/e.json
expect_bad unlearn-ref-lm-dir   "--reference: $LM is a language model directory" "${U[@]}" "${S[@]}" "${N[@]}" --reference "$LM"
expect_bad hard-model-dir       "--model: $WORK/out is a directory" hardness --threads 1 --model "$WORK/out" --data "$D" --split class=1

# hamu hardness on QA pairs: exact duplicates of the forget pairs are their nearest retain pairs, shown as text.
H=(hardness --threads 1 --model "$LM" --data "qa:$QA")
expect_bad hard-lm-no-paraphrase "paraphrases"    "${H[@]}" --split fraction=0.3 --duplicates semantic --json out/h.json
expect_bad hard-lm-no-group      "group"          "${H[@]}" --split group=nobody --json out/h.json
expect_bad hard-lm-memory       "--memory-mb"    "${H[@]}" --split fraction=0.3 --memory-mb 0 --json out/h.json
if "$HAMU" "${H[@]}" --split fraction=0.3 --duplicates exact --top 3 --json out/ht.json --svg out/ht.svg \
     > hard_lm.out 2> hard_lm.err && grep -q '^      nearest  Q: .*\[an added duplicate: same answer\]' hard_lm.out &&
   grep -q '^verdict: ' hard_lm.out && [[ $(grep -c '"similar_is_duplicate": true' out/ht.json) -ge 2 ]] &&
   grep -q '"tokens_per_pair": 48' out/ht.json && grep -q '"hash": "fnv1a64:' out/ht.json && [[ -s out/ht.svg ]]; then
  pass
else
  fail "hardness of a language model on good input: $(tail -3 hard_lm.err)"
fi

# hamu hardness against PyTorch (tests/fixtures/hardness: expected.json from make_fixture.py, float64 per-sample
# gradients; tests/test_hardness_torch.cpp checks every number): the command line picks the same samples and
# blocks, and the per-block collateral flags agree with the count the verdict uses (an infeasible block has none).
HF=$LM_FIX/hardness
hard_json() { grep -o "\"$2\": [^,]*" "$1" | head -1 | sed 's/.*: //'; }
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-5 * (b < 0 ? -b : b)) }'; }
if "$HAMU" hardness --threads 1 --model "$HF/mlp.safetensors" --data "idx:$HF" --split "indices=$HF/forget.txt" \
     --ratio 0.9 --lr 0.02 --json out/hf_mlp.json > hf.out 2> hf.err &&
   "$HAMU" hardness --threads 1 --model "$HF/cnn.safetensors" --data "idx:$HF" --split "indices=$HF/forget.txt" \
     --ratio 0.5 --lr 0.01 --clip 0 --path ghost --json out/hf_cnn.json >> hf.out 2>> hf.err &&
   "$HAMU" hardness --threads 1 --model "$LM_FIX/lm_text/gpt2" --lora "$HF/lora" --data "qa:$HF/qa.jsonl" --template plain \
     --split "forget=$HF/qa_forget.jsonl" --path materialise --ratio 0.1 --lr 0.01 --json out/hf_lora.json >> hf.out 2>> hf.err &&
   near "$(hard_json out/hf_mlp.json kappa)" 4.352314068269728 &&
   near "$(hard_json out/hf_cnn.json kappa)" 0.04370372344274538 &&
   near "$(hard_json out/hf_lora.json kappa)" 1.7432725274066028 &&
   [[ $(grep -o '"similar_index": [0-9]*' out/hf_mlp.json | awk '{printf "%s ", $2}') == "17 12 18 19 19 0 " ]] &&
   [[ $(grep -o '"similar_index": [0-9]*' out/hf_cnn.json | awk '{printf "%s ", $2}') == "13 0 22 19 7 0 " ]] &&
   [[ $(grep -o '"similar_index": [0-9]*' out/hf_lora.json | awk '{printf "%s ", $2}') == "4 7 7 " ]] &&
   grep -q '"verdict": "hard: expect collateral forgetting"' out/hf_mlp.json && grep -q '"collateral_blocks": 4' out/hf_mlp.json &&
   [[ $(grep -c '"collateral": true' out/hf_mlp.json) -eq 4 ]] &&
   grep -q '"collateral_blocks": 0' out/hf_cnn.json && ! grep -q '"collateral": true' out/hf_cnn.json &&
   [[ $(hard_json out/hf_cnn.json feasibility_margin) == -* ]] && grep -q '"verdict": "moderate"' out/hf_lora.json; then
  pass
else
  fail "hardness on the PyTorch fixture (tests/fixtures/hardness): $(tail -3 hf.err)"
fi

# ---- LoRA on a language model: train, load in both forms, merge, unlearn; bad --lora input ------------------

LT=$LM_FIX/lm_text
LTRAIN=(--threads 1 --data "qa:$QA" --lora r=4,alpha=8 --epochs 12 --batch 5 --lr 0.02 --warmup 0)
cp "$LT/gpt2/model.safetensors" base_before.safetensors
must_make lora_g train "${LTRAIN[@]}" --model "$LT/gpt2" --out lora_g --merge merged_g --json lora_g.json
must_make lora_l train "${LTRAIN[@]}" --model "$LT/llama" --split fraction=0.3 --out lora_l --merge merged_l
losses=$(grep -o '"train_loss": [0-9.e+-]*' lora_g.json | awk '{print $2}')
if awk -v a="$(head -1 <<< "$losses")" -v b="$(tail -1 <<< "$losses")" 'BEGIN { exit !(b < 0.7 * a) }' &&
   cmp -s base_before.safetensors "$LT/gpt2/model.safetensors" &&
   [[ $(ls lora_g | tr '\n' ' ') == "adapter_config.json adapter_model.safetensors hamu.json " ]] &&
   [[ $(grep -ao '"dtype"' lora_g/adapter_model.safetensors | wc -l) -eq 16 ]] &&
   [[ $(grep -aoE '"base_model\.model\.transformer\.h\.[01]\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_[AB]\.weight"' lora_g/adapter_model.safetensors | sort -u | wc -l) -eq 16 ]] &&
   grep -q '"base_model_name_or_path": "'"$LT/gpt2"'"' lora_g/adapter_config.json && grep -q '"kind": "original"' lora_g/hamu.json &&
   [[ -f merged_g/config.json && -f merged_g/tokenizer.json ]]; then
  pass
else
  fail "lora train: loss ($(tr '\n' ' ' <<< "$losses")), base file, PEFT files or merge: $(cat log_lora_g.err | tail -3)"
fi
# The two ways to load an adapter give the same numbers, the merged model the same to rel. 1e-5.
"$HAMU" eval --threads 1 --model lora_g --data "qa:$QA" --json lora_e1.json > /dev/null 2>&1
"$HAMU" eval --threads 1 --model "$LT/gpt2" --lora lora_g --data "qa:$QA" --json lora_e2.json > /dev/null 2>&1
"$HAMU" eval --threads 1 --model merged_g --data "qa:$QA" --json lora_e3.json > /dev/null 2>&1
"$HAMU" eval --threads 1 --model lora_l --data "qa:$QA" --json lora_e4.json > /dev/null 2>&1
"$HAMU" eval --threads 1 --model merged_l --data "qa:$QA" --json lora_e5.json > /dev/null 2>&1
l1=$(grep '"loss"' lora_e1.json); l2=$(grep '"loss"' lora_e2.json); l3=$(grep '"loss"' lora_e3.json)
l4=$(grep '"loss"' lora_e4.json); l5=$(grep '"loss"' lora_e5.json)
close() { awk -v a="${1##*: }" -v b="${2##*: }" 'BEGIN { a += 0; b += 0; d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5 * a) }'; }
if [[ -n $l1 && $l1 == "$l2" ]] && grep -q '"adapter": "lora_g"' lora_e1.json && close "$l1" "$l3" && close "$l4" "$l5"; then
  pass
else
  fail "lora eval: adapter dir '$l1', base + --lora '$l2', merged '$l3'; llama adapter '$l4', merged '$l5'"
fi
# hamu hardness on an adapter directory: the adapter's blocks only.
if "$HAMU" hardness --threads 1 --model lora_l --duplicates exact --top 1 --json lora_h.json > lora_h.out 2> lora_h.err &&
   [[ $(grep -c '"kind": "linear"' lora_h.json) -gt 0 ]] && ! grep '"name": ' lora_h.json | grep -qv 'lora_[AB]'; then
  pass
else
  fail "hardness of an adapter: $(tail -3 lora_h.err)"
fi
# Unlearning an adapter writes an unlearned adapter (other A/B bytes), never the base.
for m in hamu-q ga; do
  if "$HAMU" unlearn --threads 1 --model lora_l --method "$m" --steps 3 --batch 4 --forget-batch 3 --lr 0.05 --ratio 0.1 --gen-samples 0 \
       --show 0 --out "unl_$m" > "unl_$m.out" 2> "unl_$m.err" &&
     [[ $(ls "unl_$m" | tr '\n' ' ') == "adapter_config.json adapter_model.safetensors hamu.json " ]] &&
     ! cmp -s lora_l/adapter_model.safetensors "unl_$m/adapter_model.safetensors" && grep -q '"kind": "unlearned"' "unl_$m/hamu.json" &&
     grep -q "base frozen" "unl_$m.err"; then
    pass
  else
    fail "lora unlearn $m: $(tail -3 "unl_$m.err")"
  fi
done
# Greedy answers are generated in inference mode: an adapter with heavy dropout whose unlearning applies no step
# (infeasible at step 1) answers the same before and after, and the same as the original.
must_make lora_d train "${LTRAIN[@]/r=4,alpha=8/r=4,alpha=8,dropout=0.5}" --model "$LT/llama" --split fraction=0.3 --out lora_d
if "$HAMU" unlearn --threads 1 --model lora_d --method hamu-q --ratio 0.99 --steps 3 --batch 4 --forget-batch 3 --show 3 \
     --json lora_d.json > lora_d.out 2> lora_d.err && grep -q '"no_step_applied": true' lora_d.json &&
   rl=($(grep -o '"rouge_l": [0-9.e+-]*' lora_d.json | awk '{print $2}')) && [[ ${#rl[@]} -eq 4 && ${rl[0]} == "${rl[2]}" && ${rl[1]} == "${rl[3]}" ]] &&
   awk '/^     original:/ { o = substr($0, 17) } /^     unlearned:/ { n++; if (substr($0, 17) != o) bad++ } END { exit !(n == 3 && !bad) }' lora_d.out; then
  pass
else
  fail "greedy answers of an unchanged adapter with dropout: $(grep -E 'ROUGE|original:|unlearned:' lora_d.out | tr '\n' ' ')"
fi
mkdir -p lora_nobase lora_shape
cp lora_g/adapter_model.safetensors lora_nobase/ && cp lora_g/adapter_model.safetensors lora_shape/
sed 's#"base_model_name_or_path": ".*"#"base_model_name_or_path": "nowhere/gpt2"#' lora_g/adapter_config.json > lora_nobase/adapter_config.json
sed 's#"r": 4#"r": 8#' lora_g/adapter_config.json > lora_shape/adapter_config.json
mkdir -p lora_dora && cp lora_g/adapter_model.safetensors lora_dora/
sed 's#"use_dora": false#"use_dora": true#' lora_g/adapter_config.json > lora_dora/adapter_config.json
LB=(train --threads 1 --data "qa:$QA" --model "$LT/gpt2" --out out/a)
expect_bad lora-zero-rank      "--lora: r must"        "${LB[@]}" --lora r=0
expect_bad lora-unknown-field  "unknown field 'foo'"   "${LB[@]}" --lora r=4,foo=1
expect_bad lora-gpt2-gate      "target 'gate'"         "${LB[@]}" --lora r=4,targets=gate
expect_bad lora-no-layer       "matches no Linear"     "${LB[@]}" --lora r=4,targets=nothing
expect_bad lora-merge-no-lora  "--merge"               "${LB[@]}" --merge out/m
expect_bad lora-gpt-small      "--lora"                train --threads 1 --data "qa:$QA" --model gpt-small --lora r=4 --out out/a
expect_bad lora-base-missing   "nowhere/gpt2"          eval --threads 1 --model lora_nobase --data "qa:$QA" --json out/e.json
expect_bad lora-unlearn-nobase "nowhere/gpt2"          unlearn --threads 1 --model lora_nobase --method ga --out out/u
expect_bad lora-other-arch     "down_proj"             eval --threads 1 --model "$LT/gpt2" --lora lora_l --data "qa:$QA" --json out/e.json
expect_bad lora-shape          "another base model"    eval --threads 1 --model "$LT/gpt2" --lora lora_shape --data "qa:$QA" --json out/e.json
expect_bad lora-dora           "\"use_dora\" = true is not supported" eval --threads 1 --model "$LT/gpt2" --lora lora_dora --data "qa:$QA" --json out/e.json
expect_bad lora-not-adapter    "adapter_config.json"   eval --threads 1 --model "$LT/gpt2" --lora "$LT/llama" --data "qa:$QA" --json out/e.json
expect_bad lora-spec-on-eval   "not an adapter"        eval --threads 1 --model "$LT/gpt2" --lora r=8 --data "qa:$QA" --json out/e.json
expect_bad lora-image-train    "LoRA adapts language"  train --data "$D" --model mlp --lora r=8 "${TRAIN[@]}" --out out/t.safetensors
expect_bad lora-image-eval     "LoRA adapts language"  eval --model orig.safetensors --data "$D" --lora lora_g --json out/e.json
expect_bad lora-image-unlearn  "LoRA adapts language"  unlearn --model orig.safetensors --data "$D" --split class=1 --method ga --lora lora_g --out out/u.safetensors
# --base-dtype bfloat16 (a bfloat16 frozen base): LoRA only, CUDA only.
expect_bad bf16-base-cpu       "CUDA-only"             "${LB[@]}" --lora r=4 --base-dtype bfloat16
expect_bad bf16-base-no-lora   "give --lora"           eval --threads 1 --model "$LT/gpt2" --data "qa:$QA" --base-dtype bfloat16 --json out/e.json
expect_bad bf16-base-value     "--base-dtype: 'half'"  eval --threads 1 --model "$LT/gpt2" --lora lora_g --data "qa:$QA" --base-dtype half --json out/e.json
expect_bad bf16-base-unlearn   "CUDA-only"             unlearn --threads 1 --model lora_l --method ga --base-dtype bfloat16 --out out/u

# ---- a --reference made for another forget set is refused (issue #16) -------------------------------

must_make ref_rand train --data "$D" --model mlp --split random=0.3 --subset retain "${TRAIN[@]}" --out ref_rand.safetensors
expect_bad eval-reference-split   "split 'class=1'" eval --model orig.safetensors --data "$D" --split class=0 --reference ref.safetensors --json out/e.json
expect_bad eval-reference-random  "split 'class=1'" eval --model orig.safetensors --data "$D" --split random=0.3 --reference ref.safetensors --json out/e.json
expect_bad eval-reference-seed    "seed=1" eval --model orig.safetensors --data "$D" --split random=0.3 --seed 1 --reference ref_rand.safetensors --json out/e.json
expect_bad eval-reference-full    "subset 'full'" eval --model orig.safetensors --data "$D" --split class=1 --reference orig.safetensors --json out/e.json
expect_bad unlearn-reference-split "--force-reference" "${U[@]}" "${N[@]}" --split class=0 --method ga --reference ref.safetensors
expect_bad compare-reference-split "--force-reference" "${C[@]}" "${N[@]}" --split class=0 --methods ga
rm -rf out && mkdir out
if "$HAMU" eval --model orig.safetensors --data "$D" --split class=0 --reference ref.safetensors --force-reference \
     --json out/e.json > eval.out 2> eval.err && [[ -s out/e.json ]] && grep -q "warning: --force-reference" eval.err; then
  pass
else
  fail "eval --force-reference did not evaluate with a warning"; cat eval.err >&2
fi
if "$HAMU" eval --model orig.safetensors --data "$D" --split random=0.3 --reference ref_rand.safetensors \
     --json out/e.json > eval.out 2> eval.err; then
  pass
else
  fail "eval with a matching random-split reference was refused"; cat eval.err >&2
fi

# ---- provenance and --config replay (issue #16) ----------------------------------------------------

rm -rf out && mkdir out
# header NAME FILE / tensors FILE: a safetensors file's JSON header and the tensor bytes after it.
header() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); head -c $((8 + n)) "$1" | tail -c +9; }
tensors() { local n; n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
config_of() { sed -n '/"config": {/,/}/p' "$1" | grep -v -e '"--out"' -e '"--json"' -e '"--config"'; }
if "$HAMU" train --data "$D" --model mlp --split class=1 "${TRAIN[@]}" --lr 0.002 --out out/p1.safetensors \
     --json out/p1.json > p1.out 2> p1.err &&
   "$HAMU" train --config out/p1.json --out out/p2.safetensors --json out/p2.json > p2.out 2> p2.err; then
  if cmp -s <(tensors out/p1.safetensors) <(tensors out/p2.safetensors) && [[ -n $(config_of out/p1.json) ]] &&
     diff <(config_of out/p1.json) <(config_of out/p2.json) > /dev/null && grep -q '"--lr": "0.002"' out/p2.json &&
     grep -q '"git_commit"' out/p1.json && grep -q '"command_line": "hamu train --data' out/p1.json &&
     grep -q '"hash": "fnv1a64:' out/p1.json && header out/p1.safetensors | grep -q '"provenance"'; then
    pass
  else
    fail "train --config replay: other tensors or configuration, or provenance missing"
  fi
else
  fail "train --config replay failed: $(cat p1.err p2.err)"
fi
if "$HAMU" "${U[@]/orig.safetensors/out/p1.safetensors}" "${S[@]}" "${N[@]}" --method ga > pu.out 2> pu.err; then
  h=$(header out/u.safetensors)
  if grep -q '"unlearning":"{' <<< "$h" && grep -q '"parent":"{' <<< "$h" && ! grep -q '"epochs":"' <<< "$h" &&
     ! grep -q '"train_seconds":"' <<< "$h" && grep -q 'fnv1a64:' <<< "$h" && grep -q '"kind":"unlearned"' <<< "$h"; then
    pass
  else
    fail "unlearned checkpoint: no parent/unlearning record, or the original's training facts at the top: $h"
  fi
else
  fail "unlearn for the provenance check failed: $(cat pu.err)"
fi
# OpenMP waits (cli/main.cpp): PASSIVE unless the caller chose a policy, recorded in the provenance.
if env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$HAMU" eval --model out/p1.safetensors --threads 1 --json out/w1.json > w1.out 2> w1.err &&
   OMP_WAIT_POLICY=active "$HAMU" eval --model out/p1.safetensors --threads 1 --json out/w2.json > w2.out 2> w2.err; then
  if grep -q '"omp_wait_policy": "PASSIVE"' out/w1.json && grep -q '"omp_wait_policy": "active"' out/w2.json; then
    pass
  else
    fail "OMP_WAIT_POLICY: want PASSIVE by default and the caller's value kept: $(grep omp_wait out/w1.json out/w2.json)"
  fi
else
  fail "eval for the OpenMP wait-policy check failed: $(cat w1.err w2.err)"
fi
expect_bad config-missing "nowhere.json" train --data "$D" --model mlp --config nowhere.json --out out/t.safetensors

# ---- compare --save-dir (issue #16 item 5): each method's checkpoint and CSV, as unlearn --out/--log write them
if "$HAMU" compare --model orig.safetensors --reference ref.safetensors --data "$D" "${S[@]}" --methods ga,hamu-q \
     --batch 8 --forget-batch 8 --threads 1 --steps 3 --save-dir out/kept > sd.out 2> sd.err &&
   "$HAMU" "${U[@]}" "${S[@]}" "${N[@]}" --method ga > sdu.out 2> sdu.err; then
  if [[ -s out/kept/ga.safetensors && -s out/kept/hamu-q.safetensors && -s out/kept/hamu-q.csv ]] &&
     cmp -s <(tensors out/kept/ga.safetensors) <(tensors out/u.safetensors) &&
     [[ $(head -1 out/kept/ga.csv) == $(head -1 out/u.csv) ]] && grep -q '"kind":"unlearned"' <(header out/kept/ga.safetensors) &&
     diff -q <(grep '^step' out/kept/ga.csv | cut -d, -f1,2,4-) <(grep '^step' out/u.csv | cut -d, -f1,2,4-) > /dev/null; then
    pass
  else
    fail "compare --save-dir: checkpoints or CSVs missing or unlike hamu unlearn's: $(ls out/kept)"
  fi
else
  fail "compare --save-dir failed: $(cat sd.err sdu.err)"
fi
printf 'x' > notadir
expect_bad save-dir-file "--save-dir" compare --model orig.safetensors --reference ref.safetensors --data "$D" "${S[@]}" \
  --methods ga --threads 1 --steps 3 --save-dir notadir

# ---- output paths checked up front (issue #15 item 6): a create in the folder is tried before any work (chmod
# says nothing to root, so the unwritable folders are a path through a file and /proc); a write that fails
# later (a full disk: /dev/full) is an error naming the file, exit 1, nothing else written.
printf 'x' > plainfile
expect_bad out-under-file     "'plainfile' is not a folder" "${U[@]/out\/u.safetensors/plainfile/u.safetensors}" "${S[@]}" "${N[@]}" --method ga
expect_bad log-in-proc        "--log: folder '/proc' is not writable" "${U[@]/out\/u.csv/\/proc\/u.csv}" "${S[@]}" "${N[@]}" --method ga
expect_bad json-in-proc       "--json: folder '/proc' is not writable" "${U[@]/out\/u.json/\/proc\/u.json}" "${S[@]}" "${N[@]}" --method ga
# /dev/full must be the device (an old binary run as root once replaced it with a regular file by rename).
if [[ -c /dev/full ]]; then
expect_bad out-device         "--out: '/dev/full' is not a regular file" "${U[@]/out\/u.safetensors/\/dev\/full}" "${S[@]}" "${N[@]}" --method ga
fi
expect_bad train-out-in-proc  "--out: folder '/proc' is not writable" train --data "$D" --model mlp --out /proc/t.safetensors
expect_bad compare-svg-in-proc "--svg: folder '/proc' is not writable" compare --model orig.safetensors \
  --reference ref.safetensors --data "$D" "${S[@]}" --methods ga --threads 1 --steps 3 --svg /proc/c.svg
expect_bad save-dir-in-proc   "--save-dir" compare --model orig.safetensors --reference ref.safetensors --data "$D" \
  "${S[@]}" --methods ga --threads 1 --steps 3 --save-dir /proc/kept
if [[ -c /dev/full ]]; then
rm -rf out && mkdir out
"$HAMU" "${U[@]/out\/u.csv/\/dev\/full}" "${S[@]}" "${N[@]}" --method ga > full.out 2> full.err
rc=$?
if [[ $rc -eq 1 ]] && grep -q -- '--log: writing /dev/full failed (No space left on device)' full.err && [[ -z $(ls out) ]]; then
  pass
else
  fail "unlearn --log /dev/full: exit $rc (want 1), stderr: $(tail -1 full.err), out: $(ls out | tr '\n' ' ')"
fi
else
  echo "cli_test: /dev/full is not a character device on this machine: the two full-disk cases are skipped" >&2
fi

# ---- a run that applied no step (issue #15 item 7): hamu-q with ratio 1 is infeasible at step 1. No --out (the
# model is the original, not an unlearned one), exit 1, the reason said; the JSON and compare mark it.
rm -rf out && mkdir out
"$HAMU" "${U[@]}" "${S[@]}" "${N[@]}" --method hamu-q --ratio 1 > ns.out 2> ns.err
rc=$?
if [[ $rc -eq 1 ]] && grep -q 'no step was applied (stop reason infeasible): not writing --out out/u.safetensors' ns.err &&
   [[ ! -e out/u.safetensors ]] && grep -q '"no_step_applied": true' out/u.json; then
  pass
else
  fail "unlearn without a step: exit $rc (want 1), stderr: $(tail -1 ns.err), out: $(ls out | tr '\n' ' ')"
fi
if "$HAMU" compare --model orig.safetensors --reference ref.safetensors --data "$D" "${S[@]}" --methods ga,hamu-q --ratio 1 \
     --batch 8 --forget-batch 8 --threads 1 --steps 3 --save-dir out/ns > nsc.out 2> nsc.err &&
   grep -q '^hamu-q .* infeasible (no step applied: the original)$' nsc.out && [[ -s out/ns/ga.safetensors ]] &&
   [[ ! -e out/ns/hamu-q.safetensors ]] && grep -q 'hamu-q: no step was applied' nsc.err; then
  pass
else
  fail "compare with a method that applied no step: $(tail -2 nsc.err)"
fi
rm -rf out && mkdir out

# ---- Ctrl-C (issue #16 item 8): exit 130, what was written said, a partial --log marked ---------------
interrupt_after() {  # interrupt_after SECONDS OUTFILE ERRFILE ARGS...: run in the background, SIGINT, exit code
  local t=$1 o=$2 e=$3; shift 3
  "$HAMU" "$@" > "$o" 2> "$e" &
  local pid=$!
  sleep "$t"
  kill -INT "$pid"
  wait "$pid"
}
interrupt_after 1 ci.out ci.err train --data "$D" --model mlp --batch 16 --threads 1 --epochs 100000 --out out/ci.safetensors
rc=$?
if [[ $rc -eq 130 ]] && grep -q 'hamu train: interrupted, nothing written' ci.err && [[ ! -e out/ci.safetensors ]] &&
   [[ -z $(ls out) ]]; then
  pass
else
  fail "train interrupted: exit $rc (want 130), stderr: $(tail -2 ci.err)"
fi
interrupt_after 1 cu.out cu.err "${U[@]}" "${S[@]}" --method ga --steps 10000000 --eval-every 0 --stop none
rc=$?
if [[ $rc -eq 130 ]] && grep -q 'interrupted, out/u.csv kept up to step [0-9]* and marked' cu.err &&
   [[ $(tail -1 out/u.csv) =~ ^#\ interrupted\ at\ step\ [0-9]+$ ]] && [[ $(wc -l < out/u.csv) -gt 2 ]]; then
  pass
else
  fail "unlearn --log interrupted: exit $rc (want 130), stderr: $(tail -2 cu.err), log ends: $(tail -1 out/u.csv 2>/dev/null)"
fi

# ---- text train/unlearn/compare (issues #11, #15, #16): bad input, outputs checked first, no-step runs,
# provenance and --config replay, compare --save-dir -------------------------------------------------------

TQ=(--threads 1 --model gpt-small --vocab 300 --epochs 2 --batch 4)
must_make gs_orig train "${TQ[@]}" --data "qa:$QA" --split fraction=0.3 --out gs_orig --json gs_orig.json
must_make gs_ref  train "${TQ[@]}" --data "qa:$QA" --split fraction=0.3 --subset retain --out gs_ref
head -2 "$QA" > qa_bad_line.jsonl; printf '{"question": "x", "answer": \n' >> qa_bad_line.jsonl; sed -n 3,5p "$QA" >> qa_bad_line.jsonl
head -2 "$QA" > qa_no_answer.jsonl; printf '{"question": "x"}\n' >> qa_no_answer.jsonl
: > qa_empty.jsonl
TU=(unlearn --threads 1 --model gs_orig --steps 3 --batch 2 --forget-batch 2 --show 0 --gen-samples 0)
expect_bad text-train-bad-line     "qa_bad_line.jsonl:3:"     train "${TQ[@]}" --data qa:qa_bad_line.jsonl --out out/m
expect_bad text-train-no-field     "qa_no_answer.jsonl:3: missing field 'answer'" train "${TQ[@]}" --data qa:qa_no_answer.jsonl --out out/m
expect_bad text-train-empty-forget "qa_empty.jsonl: no QA pairs" train "${TQ[@]}" --data "qa:$QA" --split forget=qa_empty.jsonl --out out/m
expect_bad text-train-no-group     "group 'nobody' matches no pair" train "${TQ[@]}" --data "qa:$QA" --split group=nobody --out out/m
expect_bad text-train-template     "needs token <|im_end|>"   train --threads 1 --model "$LM_FIX/lm_text/llama" --data "qa:$QA" --template chatml --out out/m
expect_bad text-unlearn-bad-line   "qa_bad_line.jsonl:3:"     "${TU[@]}" --method ga --data qa:qa_bad_line.jsonl --out out/u
expect_bad text-unlearn-no-field   "qa_no_answer.jsonl:3: missing field 'answer'" "${TU[@]}" --method ga --data qa:qa_no_answer.jsonl --out out/u
expect_bad text-unlearn-empty-forget "qa_empty.jsonl: no QA pairs" "${TU[@]}" --method ga --split forget=qa_empty.jsonl --out out/u
expect_bad text-unlearn-no-group   "group 'nobody' matches no pair" "${TU[@]}" --method ga --split group=nobody --out out/u --log out/u.csv
expect_bad text-unlearn-template   "needs token <|im_end|>"   "${TU[@]}" --method ga --template chatml --out out/u --json out/u.json
expect_bad text-compare-no-group   "group 'nobody' matches no pair" compare --threads 1 --model gs_orig --reference gs_ref --methods ga \
  --steps 3 --split group=nobody --save-dir out/kept
expect_bad text-train-out-in-proc  "--out: folder '/proc' is not writable" train "${TQ[@]}" --data "qa:$QA" --out /proc/m
expect_bad text-train-out-under-file "--out: 'plainfile/m' is not a folder (a file is in its path)" train "${TQ[@]}" --data "qa:$QA" --out plainfile/m
expect_bad text-unlearn-out-in-proc "--out: folder '/proc' is not writable" "${TU[@]}" --method ga --out /proc/u
expect_bad text-unlearn-log-in-proc "--log: folder '/proc' is not writable" "${TU[@]}" --method ga --out out/u --log /proc/u.csv
expect_bad text-lora-merge-in-proc "--merge: folder '/proc' is not writable" train --threads 1 --data "qa:$QA" --model "$LT/gpt2" \
  --lora r=4 --epochs 1 --out out/a --merge /proc/m
# A sequence longer than --max-length (or the context) is truncated with a counted warning (README "Text unlearning").
if "$HAMU" train "${TQ[@]}" --data "qa:$QA" --max-length 10 --out out/trunc > trunc.out 2> trunc.err &&
   grep -q 'warning: 10 of 10 QA pairs truncated to 10 tokens' trunc.err; then
  pass
else
  fail "text train with --max-length 10: no counted truncation warning: $(tail -2 trunc.err)"
fi
rm -rf out && mkdir out
# No step applied (hamu-q, ratio 1): no model directory, exit 1, the JSON says so.
"$HAMU" "${TU[@]}" --method hamu-q --ratio 1 --out out/u --json out/u.json > tns.out 2> tns.err
rc=$?
if [[ $rc -eq 1 ]] && grep -q 'no step was applied (stop reason infeasible): not writing --out out/u' tns.err &&
   [[ ! -e out/u ]] && grep -q '"no_step_applied": true' out/u.json; then
  pass
else
  fail "text unlearn without a step: exit $rc (want 1), stderr: $(tail -1 tns.err), out: $(ls out | tr '\n' ' ')"
fi
if [[ -c /dev/full ]]; then
rm -rf out && mkdir out
"$HAMU" "${TU[@]}" --method ga --out out/u --log /dev/full > tfull.out 2> tfull.err
rc=$?
if [[ $rc -eq 1 ]] && grep -q -- '--log: writing /dev/full failed' tfull.err && [[ -z $(ls out) ]]; then
  pass
else
  fail "text unlearn --log /dev/full: exit $rc (want 1), stderr: $(tail -1 tfull.err), out: $(ls out | tr '\n' ' ')"
fi
fi
# Provenance: a text train replays from its report with --config to the same tensor bytes; hamu.json of the trained and
# the unlearned model record the data's hash, the parent and the configuration.
rm -rf out && mkdir out
if "$HAMU" train --config gs_orig.json --out out/gs2 --json out/gs2.json > gsr.out 2> gsr.err; then
  if cmp -s <(tensors gs_orig/model.safetensors) <(tensors out/gs2/model.safetensors) &&
     diff <(config_of gs_orig.json) <(config_of out/gs2.json) > /dev/null && grep -q '"--vocab": "300"' out/gs2.json &&
     grep -q '"hash": "fnv1a64:' gs_orig/hamu.json && grep -q '"command_line": "hamu train --threads 1 --model gpt-small' gs_orig/hamu.json; then
    pass
  else
    fail "text train --config replay: other tensors or configuration, or provenance missing"
  fi
else
  fail "text train --config replay failed: $(tail -2 gsr.err)"
fi
if "$HAMU" "${TU[@]}" --method ga --out out/u --log out/u.csv --json out/u.json > tu.out 2> tu.err &&
   "$HAMU" unlearn --config out/u.json --out out/u2 > tu2.out 2> tu2.err; then
  if grep -q '"unlearning": {' out/u/hamu.json && grep -q '"training": {' out/u/hamu.json && grep -q '"parent": {' out/u.json &&
     grep -q '"hash": "fnv1a64:' out/u.json && cmp -s out/u/model.safetensors out/u2/model.safetensors; then
    pass
  else
    fail "text unlearn: provenance (unlearning, parent, data hash) missing or --config replay differs"
  fi
else
  fail "text unlearn for the provenance check failed: $(tail -2 tu.err tu2.err)"
fi
# hamu unlearn and compare on a language model show and use the text defaults (README "Text unlearning"); images
# keep theirs. The run above gave no --lr.
if "$HAMU" unlearn --model gs_orig --help 2>&1 | grep -q -- '--steps N .*(default 240)' &&
   "$HAMU" compare --model gs_orig --help 2>&1 | grep -q -- '--lr X .*(default 0.1)' &&
   "$HAMU" unlearn --help 2>&1 | grep -q -- '--steps N .*(default 100)' && grep -q '"lr": 0.1,' out/u.json; then
  pass
else
  fail "text unlearn/compare: the text defaults (--lr 0.1, --steps 240) are not shown or not used"
fi
# --model gpt-small is a language model without --data too (its help is the text one, --data defaults to wordnet-qa).
if "$HAMU" train --model gpt-small --help 2>&1 | grep -q -- '--lora SPEC' && "$HAMU" train --help 2>&1 | grep -q -- '--model ARCH .*mlp, cnn'; then
  pass
else
  fail "hamu train --model gpt-small --help does not show the text flags"
fi
# The data's hash is over the pairs read: one changed answer gives another hash, the same file the same one.
sed '2s/Paris/Lyon/' "$QA" > qa_lyon.jsonl
hash_of() { "$HAMU" eval --threads 1 --model gs_orig --data "qa:$1" --json "$2" > /dev/null 2>&1; grep -A2 '"data": {' "$2" | grep -o 'fnv1a64:[0-9a-f]*'; }
h1=$(hash_of "$QA" out/h1.json); h2=$(hash_of "$QA" out/h2.json); h3=$(hash_of qa_lyon.jsonl out/h3.json)
if [[ -n $h1 && $h1 == "$h2" && -n $h3 && $h1 != "$h3" ]] && ! cmp -s "$QA" qa_lyon.jsonl; then
  pass
else
  fail "text data hash: same data '$h1' '$h2', one answer changed '$h3'"
fi
# compare --save-dir on text: each method's model directory and CSV, as hamu unlearn --out/--log write them.
if "$HAMU" compare --threads 1 --model gs_orig --reference gs_ref --steps 3 --batch 2 --forget-batch 2 --ratio 0.1 --gen-samples 0 \
     --methods ga,hamu-q --save-dir out/kept > tsd.out 2> tsd.err; then
  if [[ -s out/kept/hamu-q/model.safetensors && -s out/kept/hamu-q.csv ]] && cmp -s out/kept/ga/model.safetensors out/u/model.safetensors &&
     grep -q '"kind": "unlearned"' out/kept/ga/hamu.json && [[ $(head -1 out/kept/ga.csv) == $(head -1 out/u.csv) ]] &&
     diff -q <(grep '^step' out/kept/ga.csv | cut -d, -f1,2,4-) <(grep '^step' out/u.csv | cut -d, -f1,2,4-) > /dev/null; then
    pass
  else
    fail "text compare --save-dir: model directories or CSVs missing or unlike hamu unlearn's: $(ls out/kept | tr '\n' ' ')"
  fi
else
  fail "text compare --save-dir failed: $(tail -2 tsd.err)"
fi
must_make lora_l_ref train --threads 1 --data "qa:$QA" --lora r=4,alpha=8 --epochs 1 --batch 5 --model "$LT/llama" --split fraction=0.3 \
  --subset retain --out lora_l_ref  # the retrained reference of lora_l (an adapter's hamu.json is checked)
if "$HAMU" compare --threads 1 --model lora_l --reference lora_l_ref --steps 2 --batch 4 --forget-batch 3 --lr 0.05 --ratio 0.1 --gen-samples 0 \
     --methods ga --save-dir out/kept_lora > tsl.out 2> tsl.err &&
   [[ $(ls out/kept_lora/ga | tr '\n' ' ') == "adapter_config.json adapter_model.safetensors hamu.json " ]]; then
  pass
else
  fail "text compare --save-dir on a LoRA adapter: $(tail -2 tsl.err) $(ls out/kept_lora/ga 2>/dev/null | tr '\n' ' ')"
fi
rm -rf out && mkdir out
# A text --reference must be retrained on this run's retain set (hamu.json: subset retain, data, split, duplicates,
# template, then the data hash). Nine pairs, none longer than gpt-small's context: a refusal is the only stderr line.
head -9 "$QA" > qa9.jsonl && cp qa9.jsonl qa9_copy.jsonl
must_make gs9       train "${TQ[@]}" --data qa:qa9.jsonl --split fraction=0.3 --out gs9
must_make gs9_ref   train "${TQ[@]}" --data qa:qa9.jsonl --split fraction=0.3 --subset retain --out gs9_ref
must_make gs9_copy  train "${TQ[@]}" --data qa:qa9_copy.jsonl --split fraction=0.3 --subset retain --out gs9_copy
must_make gs9_unl   unlearn --threads 1 --model gs9 --method ga --steps 1 --batch 2 --forget-batch 2 --show 0 --gen-samples 0 --out gs9_unl
sed -i '2s/Paris/Lyon/' qa9_copy.jsonl  # same spec, another answer: only the recorded hash tells
cp -r gs9_ref gs9_bare && rm gs9_bare/hamu.json
TR=(unlearn --threads 1 --model gs9 --method ga --steps 2 --batch 2 --forget-batch 2 --show 0 --gen-samples 0 --out out/u --json out/u.json)
expect_bad text-ref-full       "gs9 was not retrained for this forget set: subset 'full' (not the retain set)" "${TR[@]}" --reference gs9
expect_bad text-ref-unlearned  "kind 'unlearned'"  "${TR[@]}" --reference gs9_unl
expect_bad text-ref-split      "split 'fraction=0.3,seed=0', this run 'fraction=0.5,seed=0'" "${TR[@]}" --reference gs9_ref --split fraction=0.5
expect_bad text-ref-seed       "this run 'fraction=0.3,seed=1'" "${TR[@]}" --reference gs9_ref --split fraction=0.3,seed=1
expect_bad text-ref-data       "data 'qa:$QA', this run 'qa:qa9.jsonl'" "${TR[@]}" --reference gs_ref
expect_bad text-ref-duplicates "duplicates 'none' added to retain, this run 'exact'" "${TR[@]}" --reference gs9_ref --duplicates exact
expect_bad text-ref-hash       "a data, forget= or test= file changed" "${TR[@]}" --reference gs9_copy --data qa:qa9_copy.jsonl
expect_bad text-ref-compare    "--force-reference" compare --threads 1 --model gs9 --reference gs9_ref --split fraction=0.5 --methods ga \
  --steps 2 --json out/c.json
if "$HAMU" "${TR[@]}" --reference gs9_ref > tref.out 2> tref.err && [[ -s out/u/model.safetensors ]] && ! grep -q warning tref.err &&
   grep -q '^gap to retrained' tref.out; then
  pass
else
  fail "text unlearn with a matching retrained reference: $(tail -2 tref.err)"
fi
rm -rf out && mkdir out
if "$HAMU" "${TR[@]}" --reference gs9 --force-reference > tref.out 2> tref.err && [[ -s out/u/model.safetensors ]] &&
   grep -q "warning: --force-reference: gs9 was not retrained for this forget set: subset 'full'" tref.err; then
  pass
else
  fail "text unlearn --force-reference: not accepted with a warning: $(tail -2 tref.err)"
fi
rm -rf out && mkdir out
if "$HAMU" "${TR[@]}" --reference gs9_bare > tref.out 2> tref.err && [[ -s out/u/model.safetensors ]] &&
   grep -q "warning: --reference: gs9_bare records no training data.*cannot check" tref.err; then
  pass
else
  fail "text unlearn with a reference without hamu.json: not accepted with a warning: $(tail -2 tref.err)"
fi
rm -rf out && mkdir out

# ---- the new-user walk's follow-ups (H41) -----------------------------------------------------------------
# Text hardness shows and uses text unlearning's --ratio/--lr (what a text hamu unlearn would see); a flag given
# wins; images keep theirs. Its --help lists --help and --ratio/--lr like the image one.
HT=(hardness --threads 1 --model "$LM" --data "qa:$QA" --split fraction=0.3 --top 1)
if "$HAMU" "${HT[@]}" --json out/hd.json > hd.out 2> hd.err && grep -q 'ratio 0.5, lr 0.1, layer scope' hd.out &&
   grep -q '"ratio": 0.5,' out/hd.json && grep -q '"lr": 0.1,' out/hd.json &&
   "$HAMU" "${HT[@]}" --ratio 0.1 --lr 0.01 > hd2.out 2>> hd.err && grep -q 'ratio 0.1, lr 0.01, layer scope' hd2.out &&
   "$HAMU" hardness --model "$LM" --help > hdh.out && grep -q -- '^  --ratio X .*(default 0.5)$' hdh.out &&
   grep -q -- '^  --lr X .*(default 0.1)$' hdh.out && grep -q -- '^  --help  ' hdh.out && head -1 hdh.out | grep -qF '[--ratio X] [--lr X]' &&
   "$HAMU" hardness --help | grep -q -- '^  --ratio X .*(default 0.1)$'; then
  pass
else
  fail "text hardness does not default to the text unlearning --ratio/--lr: $(tail -2 hd.err; grep 'as hamu unlearn' hd.out hd2.out)"
fi
# The text forms of train, eval and generate refuse --cuda-graph with the reason, not as an unknown flag.
expect_bad text-train-cuda-graph "--cuda-graph: language models are not graphed" train --threads 1 --model "$LM" --data "qa:$QA" \
  --out out/t --cuda-graph
expect_bad text-eval-cuda-graph  "--cuda-graph: language models are not graphed" eval --threads 1 --model "$LM" --data "qa:$QA" \
  --cuda-graph --json out/e.json
expect_bad gen-cuda-graph        "--cuda-graph: language models are not graphed" generate --threads 1 --model "$LM" --prompt hi \
  --cuda-graph --json out/g.json
# --quiet: no epoch lines (image and text train) and no compare per-method lines; results still print.
if "$HAMU" train --data "$D" --model mlp "${TRAIN[@]}" --quiet --out out/q.safetensors > q.out 2> q.err && ! grep -q '^epoch' q.err &&
   grep -q '^epoch 1/1' log_orig.err &&
   "$HAMU" train "${TQ[@]}" --data qa:qa9.jsonl --quiet --out out/q_text > qt.out 2> qt.err && ! grep -q '^epoch' qt.err &&
   "$HAMU" compare --model orig.safetensors --reference ref.safetensors --data "$D" "${S[@]}" --methods ga --batch 8 \
     --forget-batch 8 --threads 1 --steps 1 --quiet > qc.out 2> qc.err && ! grep -q '\[1/1\]' qc.err && grep -q '^ga ' qc.out &&
   "$HAMU" compare --model orig.safetensors --reference ref.safetensors --data "$D" "${S[@]}" --methods ga --batch 8 \
     --forget-batch 8 --threads 1 --steps 1 > qc2.out 2> qc2.err && grep -q '\[1/1\] ga: done' qc2.err; then
  pass
else
  fail "--quiet still prints epoch or per-method lines: $(grep -h '^epoch\|\[1/1\]' q.err qt.err qc.err | head -3)"
fi
# One question is singular; unlearn's usage shows --method as optional (it defaults to hamu-q), image and text.
if "$HAMU" generate --threads 1 --model "$LM" --prompt hi --max-new-tokens 2 > g1.out 2> g1.err &&
   grep -q ' for 1 question in ' g1.err && grep -q ' for 10 questions in ' gen.err &&
   "$HAMU" unlearn --help | head -1 | grep -qF ' [--method M] ' && "$HAMU" unlearn --model "$LM" --help | head -1 | grep -qF ' [--method M] '; then
  pass
else
  fail "generate's question count or unlearn's usage line: $(cat g1.err; "$HAMU" unlearn --help | head -1)"
fi
# Refusing to overwrite an input names the flag.
expect_bad compare-overwrite-input "--json: refusing to overwrite the input checkpoint" compare --model orig.safetensors \
  --reference ref.safetensors --data "$D" "${S[@]}" --methods ga --threads 1 --json orig.safetensors
expect_bad text-overwrite-input    "--out: refusing to overwrite the input model" unlearn --threads 1 --model gs9 --out gs9
rm -rf out && mkdir out

echo "cli_test: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
