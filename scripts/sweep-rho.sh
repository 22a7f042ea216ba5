#!/usr/bin/env bash
# scripts/sweep-rho.sh OUTDIR: the paper's rho sweep (HAMU.md section 9, issue #17) on Fashion-MNIST: for
# every split (class=C,rho=X for rho in 0..1, random=0.01, random=0.1), every method and every stopping
# rule, one `hamu unlearn` at the same budget against that split's own retrained model; writes
# OUTDIR/sweep.md (one Markdown table: avg gap and forget/retain accuracy per method, split and rule, plus
# what each retrained model itself scores on its forget set) and OUTDIR/sweep.svg (avg gap per method per
# split, one panel per stopping rule).
#
# The original model (trained on all data) and each split's retrained model (retain set only) are trained
# once and cached in $CACHE (default OUTDIR/cache) by model, epochs and split; a rerun skips finished runs.
#
# Settings (environment):
#   HAMU     the binary (build/hamu)          MODEL   cnn | mlp (cnn)       EPOCHS  training passes (3)
#   CLASS    the class C (0)                  RHOS    "0 0.25 0.5 0.75 1"   RANDOMS "0.01 0.1"
#   METHODS  "hamu-q hamu-u ft ga gdiff kl scrub npo gru pcgrad"
#   STOPS    stopping rules to compare ("auto"; e.g. "none mia loss-rise kappa criterion")
#   STEPS    the budget (100)                 THREADS (all cores)   EXTRA  more hamu unlearn flags
#   SEED     split seed (0)
# Time (2-core dev box): cnn, 3 epochs, all 7 splits, 10 methods, one rule: 8 trainings of ~40 s to
# 3 min and 70 unlearning runs of 20-60 s (a run that stops early is quicker): about an hour. The README's
# table (`make sweep` = this script into runs/sweep) was one such run plus hamu-q under the other rules
# (STOPS="none criterion kappa mia loss-rise", METHODS=hamu-q, EXTRA="--eval-every 10"), 2026-11-29.
# Quick subset (loaded machine, minutes):
#   MODEL=mlp EPOCHS=1 RHOS="0 0.5" RANDOMS="0.1" METHODS="hamu-q gdiff npo" scripts/sweep-rho.sh runs/rho
# Needs python3 for the table and the figure (standard library only).
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
out=$1
hamu=${HAMU:-build/hamu}
model=${MODEL:-cnn}
epochs=${EPOCHS:-3}
cls=${CLASS:-0}
rhos=${RHOS:-"0 0.25 0.5 0.75 1"}
randoms=${RANDOMS-"0.01 0.1"}
methods=${METHODS:-"hamu-q hamu-u ft ga gdiff kl scrub npo gru pcgrad"}
stops=${STOPS:-"auto"}
steps=${STEPS:-100}
seed=${SEED:-0}
threads=${THREADS:-$(nproc)}
cache=${CACHE:-$out/cache}
mkdir -p "$out" "$cache"
[ -x "$hamu" ] || { echo "sweep-rho: $hamu not built (make $hamu)" >&2; exit 2; }

splits=()
for r in $rhos; do
  if [ "$r" = 0 ]; then splits+=("class=$cls"); else splits+=("class=$cls,rho=$r"); fi
done
for f in $randoms; do splits+=("random=$f"); done

tag_of() { echo "$1" | tr '=,' '_-'; }
common=(--data fashion-mnist --model "$model" --epochs "$epochs" --threads "$threads" --seed "$seed" --quiet)
orig="$cache/original-$model-e$epochs.safetensors"
if [ ! -f "$orig" ]; then
  echo "== training the original $model ($epochs epochs, all training images) =="
  "$hamu" train "${common[@]}" --subset full --split "class=$cls" --out "$orig.tmp.safetensors" >"$cache/original.log" 2>&1
  mv "$orig.tmp.safetensors" "$orig"
fi
for s in "${splits[@]}"; do
  t=$(tag_of "$s")
  ref="$cache/retrained-$model-e$epochs-s$seed-$t.safetensors"
  if [ ! -f "$ref" ]; then
    echo "== training the retrained $model for $s (retain set only) =="
    "$hamu" train "${common[@]}" --subset retain --split "$s" --out "$ref.tmp.safetensors" >"$cache/retrained-$t.log" 2>&1
    mv "$ref.tmp.safetensors" "$ref"
  fi
  [ -f "$ref.eval.json" ] || "$hamu" eval --model "$ref" --split "$s" --threads "$threads" --seed "$seed" --quiet \
    --json "$ref.eval.json" >"$cache/retrained-$t.eval.log" 2>&1
  ln -sf "$(cd "$(dirname "$ref")" && pwd)/$(basename "$ref").eval.json" "$out/retrained-$t.json"
  for stop in $stops; do
    for m in $methods; do
      run="$out/runs/$t/$stop/$m"
      [ -f "$run.json" ] && continue
      mkdir -p "$(dirname "$run")"
      echo "-- $s  stop=$stop  $m"
      # shellcheck disable=SC2086
      "$hamu" unlearn --model "$orig" --reference "$ref" --split "$s" --method "$m" --steps "$steps" --stop "$stop" \
        --threads "$threads" --seed "$seed" --quiet --json "$run.json.tmp" --log "$run.csv" ${EXTRA:-} >"$run.log" 2>&1 &&
        mv "$run.json.tmp" "$run.json" || echo "failed: $run (see $run.log)" >&2
    done
  done
done

python3 - "$out" "$model" "$epochs" "$steps" "${splits[@]}" <<'PY'
import glob, json, os, sys
out, model, epochs, steps, splits = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
tag = lambda s: s.replace("=", "_").replace(",", "-")
runs = {}  # (split, stop, method) -> json
for s in splits:
    for f in glob.glob(os.path.join(out, "runs", tag(s), "*", "*.json")):
        stop = os.path.basename(os.path.dirname(f)); m = os.path.basename(f)[:-5]
        runs[(s, stop, m)] = json.load(open(f))
stops = sorted({k[1] for k in runs}, key=lambda x: (x != "none", x))
order = os.environ.get("METHODS", "hamu-q hamu-u ft ga gdiff kl scrub npo gru pcgrad").split()
methods = [m for m in order if any(k[2] == m for k in runs)]
pct = lambda x: 100.0 * x
lines = ["# rho sweep: %s, %s epochs, budget %s steps; avg gap to each split's own retrained model (points)" % (model, epochs, steps), ""]
lines.append("What each split's retrained model scores (the target; forgetting means matching it, not reaching 0):")
lines.append("")
lines.append("| split | forget n | retrained forget acc | retrained retain acc | retrained test acc | original forget acc |")
lines.append("|---|---:|---:|---:|---:|---:|")
for s in splits:
    any_run = next((v for k, v in runs.items() if k[0] == s), None)
    f = os.path.join(out, "retrained-%s.json" % tag(s))
    if not any_run or not os.path.exists(f): continue
    ev = json.load(open(f)); ev = ev.get("report", ev)
    ra = ev["splits"]; b = any_run["before"]["splits"]
    lines.append("| `%s` | %d | %.2f | %.2f | %.2f | %.2f |" % (s, b["forget"]["n"], pct(ra["forget"]["acc"]),
                 pct(ra["retain"]["acc"]), pct(ra["test"]["acc"]), pct(b["forget"]["acc"])))
lines.append("")
for stop in stops:
    lines.append("## stop = %s" % stop)
    lines.append("")
    lines.append("avg gap (steps taken, forget acc / retain acc in %); **bold** = lowest avg gap on the split")
    lines.append("")
    lines.append("| method | " + " | ".join("`%s`" % s for s in splits) + " | mean |")
    lines.append("|---|" + "---:|" * (len(splits) + 1))
    best = {}
    for s in splits:
        gaps = [pct(runs[(s, stop, m)]["after"]["reference"]["avg_gap"]) for m in methods if (s, stop, m) in runs]
        best[s] = min(gaps) if gaps else None
    for m in methods:
        cells, gs = [], []
        for s in splits:
            r = runs.get((s, stop, m))
            if not r: cells.append("–"); continue
            g = pct(r["after"]["reference"]["avg_gap"]); gs.append(g)
            sp = r["after"]["splits"]
            c = "%.2f (%d, %.1f/%.1f)" % (g, r["steps"], pct(sp["forget"]["acc"]), pct(sp["retain"]["acc"]))
            cells.append("**%s**" % c if best[s] is not None and abs(g - best[s]) < 1e-9 else c)
        lines.append("| %s | %s | %s |" % (m, " | ".join(cells), "%.2f" % (sum(gs) / len(gs)) if gs else "–"))
    lines.append("")
open(os.path.join(out, "sweep.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# Figure: avg gap per split (groups) in panels: first hamu-q under each stopping rule it ran with (bars =
# rules), then one panel per rule that several methods ran with (bars = methods). Bars above the axis's
# top are cut there and carry their value.
colors = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#F0E442", "#000000", "#999999", "#8C564B"]
panels = []  # (title, [(label, key function)])
q_stops = [st for st in stops if any(k[1] == st and k[2] == "hamu-q" for k in runs)]
if len(q_stops) > 1:
    panels.append(("hamu-q by stopping rule (--stop)", [(st, (lambda st: lambda s: runs.get((s, st, "hamu-q")))(st)) for st in q_stops]))
for st in stops:
    ms = [m for m in methods if any(k[1] == st and k[2] == m for k in runs)]
    if len(ms) > 1:
        panels.append(("every method, --stop %s" % st, [(m, (lambda m, st: lambda s: runs.get((s, st, m)))(m, st)) for m in ms]))
if not panels:
    panels.append(("--stop %s" % stops[0], [(m, (lambda m: lambda s: runs.get((s, stops[0], m)))(m)) for m in methods]))
W, PH, L, T = 980, 240, 50, 34
H = T + len(panels) * (PH + 78) + 10
vmax = 10.0
all_v = [pct(v["after"]["reference"]["avg_gap"]) for v in runs.values()]
if all_v and max(all_v) < vmax: vmax = max(2.0, 2 * (int(max(all_v) / 2) + 1))
step_tick = 2.0 if vmax >= 6 else 1.0
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="%d" y="20" font-size="14" font-weight="bold">rho sweep (%s, %s epochs, at most %s steps): avg gap to each split\'s retrained model, points</text>' % (L, model, epochs, steps)]
gw = (W - L - 20) / max(1, len(splits))
for p, (title, series) in enumerate(panels):
    y0 = T + 40 + p * (PH + 78)
    svg.append('<text x="%d" y="%d" font-weight="bold" font-size="12">%s</text>' % (L, y0 - 26, title))
    x = L
    for i, (label, _) in enumerate(series):
        svg.append('<rect x="%.0f" y="%d" width="10" height="10" fill="%s"/><text x="%.0f" y="%d">%s</text>' % (x, y0 - 18, colors[i % 10], x + 14, y0 - 9, label))
        x += 24 + 7.5 * len(label)
    for k in range(int(round(vmax / step_tick)) + 1):
        v = k * step_tick; y = y0 + PH - PH * v / vmax
        svg.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g</text>' % (L, W - 20, y, y, L - 4, y + 4, v))
    for j, sp in enumerate(splits):
        gx = L + j * gw; bw = (gw - 14) / max(1, len(series))
        for i, (label, get) in enumerate(series):
            r = get(sp)
            if not r: continue
            v = pct(r["after"]["reference"]["avg_gap"]); h = PH * min(v, vmax) / vmax
            bx = gx + 7 + i * bw
            svg.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2f</title></rect>' % (bx, y0 + PH - h, bw - 1, h, colors[i % 10], label, sp, v))
            if v > vmax:
                svg.append('<text x="%.1f" y="%.1f" font-size="8" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%.0f</text>' % (bx + bw / 2 + 3, y0 + 14, bx + bw / 2 + 3, y0 + 14, v))
        svg.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (gx + gw / 2, y0 + PH + 14, sp))
    svg.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>' % (L, W - 20, y0 + PH, y0 + PH))
svg.append("</svg>")
open(os.path.join(out, "sweep.svg"), "w").write("\n".join(svg) + "\n")
print("wrote %s and %s" % (os.path.join(out, "sweep.md"), os.path.join(out, "sweep.svg")))
PY
