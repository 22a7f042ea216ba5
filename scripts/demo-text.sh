#!/usr/bin/env bash
# scripts/demo-text.sh: the text experiment (make demo-text, issue #11): train gpt-small from scratch on
# wordnet-qa twice (the original on everything, the retrained reference without the forget pairs), compare
# the unlearning methods from the original against the retrained model (table + SVG), show a few forget
# questions with the three models' greedy answers, then the same with --duplicates semantic (each forget
# question's synonym paraphrase added to retain: the hard case).
#
# Sizes (environment): HAMU_TEXT_N pairs (default 300: wordnet-qa's 2,000-pair default does not memorise
# within the time on 2 cores), HAMU_TEXT_EPOCHS (default 40), HAMU_TEXT_STEPS unlearning steps (default 40).
# The forget set is group=noun.animal (10% of the sample by construction, a coherent topic as TOFU's
# authors are), with a 10% holdout as the test set. Outputs go to $HAMU_DEMO_DIR (default runs/demo-text).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "building build/hamu ..."
make -j"$(nproc)" build/hamu | grep -v "^  \(CXX\|AR\) " || true
out=${HAMU_DEMO_DIR:-runs/demo-text}
mkdir -p "$out"
hamu=build/hamu
n=${HAMU_TEXT_N:-300}
epochs=${HAMU_TEXT_EPOCHS:-40}
steps=${HAMU_TEXT_STEPS:-40}
data="wordnet-qa:$n"
split="group=noun.animal,holdout=0.1"
train_flags=(--data "$data" --model gpt-small --split "$split" --epochs "$epochs" --batch 16 --lr 0.003 --eval-epochs 10)
unlearn_flags=(--steps "$steps" --lr 0.05 --ratio 0.1 --batch 32 --forget-batch 16 --eval-every 0 --gen-samples 20)
start=$(date +%s)

run_case() {  # $1: none | semantic
  local dup=$1 dir="$out/$1"
  mkdir -p "$dir"
  echo "== [$dup] train the original (retain + forget) =="
  $hamu train "${train_flags[@]}" --duplicates "$dup" --subset full --out "$dir/original" --json "$dir/original.json"
  echo "== [$dup] train the retrained reference (retain only) =="
  $hamu train "${train_flags[@]}" --duplicates "$dup" --subset retain --out "$dir/retrained" --json "$dir/retrained.json"
  echo "== [$dup] compare unlearning methods from the original, judged against the retrained model =="
  $hamu compare --model "$dir/original" --reference "$dir/retrained" "${unlearn_flags[@]}" \
    --methods hamu-q,hamu-u,ga,gdiff,kl,scrub,npo --json "$dir/compare.json" --svg "$dir/compare.svg"
  echo "== [$dup] hamu-q: forget questions answered by the original, the unlearned and the retrained model =="
  $hamu unlearn --model "$dir/original" --reference "$dir/retrained" --method hamu-q "${unlearn_flags[@]}" --show 5 \
    --out "$dir/hamu-q" --log "$dir/hamu-q.csv" --json "$dir/hamu-q.json"
}

run_case none
run_case semantic
end=$(date +%s)
echo
echo "demo-text finished in $((end - start)) s; outputs in $out/{none,semantic}/ (compare.svg: the trade-off plot)"
