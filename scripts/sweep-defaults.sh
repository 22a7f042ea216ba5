#!/usr/bin/env bash
# scripts/sweep-defaults.sh ORIGINAL RETRAINED OUTDIR [METHOD]: the sweep behind hamu unlearn's defaults
# (README "Defaults"): runs hamu unlearn over a grid of learning rate, ratio, steps and batch size on
# one split and prints a markdown table of forget/retain/test accuracy, gaps to the retrained model
# and seconds. Needs python3 for the table. Grid overridable: LRS, RATIOS, STEPS, BATCHES.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: scripts/sweep-defaults.sh ORIGINAL.safetensors RETRAINED.safetensors OUTDIR [METHOD]" >&2
  exit 2
fi
orig=$1 ref=$2 out=$3 method=${4:-hamu-q}
hamu=${HAMU:-build/hamu}
mkdir -p "$out"
LRS=${LRS:-"0.003 0.01 0.03"}
RATIOS=${RATIOS:-"0.2 0.5 0.9"}
STEPS=${STEPS:-"100 200"}
BATCHES=${BATCHES:-"128"}
for lr in $LRS; do
  for ratio in $RATIOS; do
    for steps in $STEPS; do
      for batch in $BATCHES; do
        tag="${method}_lr${lr}_r${ratio}_s${steps}_b${batch}"
        [ -f "$out/$tag.json" ] && continue
        HAMU_NO_PROGRESS=1 "$hamu" unlearn --model "$orig" --reference "$ref" --method "$method" --lr "$lr" \
          --ratio "$ratio" --steps "$steps" --batch "$batch" --forget-batch "$batch" \
          --json "$out/$tag.json" >"$out/$tag.log" 2>&1 || echo "failed: $tag (see $out/$tag.log)" >&2
      done
    done
  done
done
python3 - "$out" <<'PY'
import glob, json, os, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    j = json.load(open(f))
    o = j["options"]; a = j["after"]; s = a["splits"]; r = a.get("reference", {})
    g = r.get("acc_gap", {})
    rows.append((o["lr"], o["ratio"], o["max_steps"], o["batch"], j["steps"], j["stop_reason"],
                 100 * s["forget"]["acc"], 100 * s["retain"]["acc"], 100 * s["test"]["acc"],
                 100 * g.get("forget", float("nan")), 100 * g.get("retain", float("nan")),
                 100 * r.get("avg_gap", float("nan")), j["seconds"]))
rows.sort()
print("| lr | ratio | steps | batch | done | stop | forget acc | retain acc | test acc | forget gap | retain gap | avg gap | s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| %g | %g | %d | %d | %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f |" % r)
PY
