#!/usr/bin/env bash
# bench/threads.sh [BUILD] [REPS] [STEPS]: OpenMP waiting policies on this machine, as it is loaded now.
# Runs bench_unlearn_step (resnet20, HAMU-Q, batch 128 + 128, CPU) with 2 threads and libgomp's default
# wait policy (spin, then sleep), with 2 threads and OMP_WAIT_POLICY=PASSIVE (what `hamu` uses unless the
# caller sets a policy: cli/main.cpp), and with 1 thread; the three alternate REPS times so that a
# changing load hits each alike. Prints one row per configuration: median and range of the step time
# (ms) and the load average around the runs. Results: bench/RESULTS.md, "Threads under load".
set -u
BUILD=${1:-build}
REPS=${2:-3}
STEPS=${3:-5}
bin=$BUILD/bench/bench_unlearn_step
[[ -x $bin ]] || { echo "bench/threads.sh: $bin is missing (make $bin)" >&2; exit 2; }
declare -A times
configs=("2 threads, runtime default" "2 threads, PASSIVE" "1 thread")
envs=("OMP_NUM_THREADS=2" "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE" "OMP_NUM_THREADS=1")
load_before=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 0; r < REPS; ++r)); do
  for i in "${!configs[@]}"; do
    ms=$(env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT ${envs[$i]} "$bin" --device cpu --steps "$STEPS" --batch 128 2>/dev/null |
         sed -n 's/^| whole step | \([0-9.]*\) |$/\1/p')
    times[$i]="${times[$i]:-} ${ms:-nan}"
  done
done
load_after=$(cut -d' ' -f1 /proc/loadavg)
echo "bench_unlearn_step (resnet20, CPU, batch 128 + 128, $STEPS steps) x $REPS, $(nproc) cores, load average $load_before -> $load_after"
echo
echo "| configuration | median step ms | range ms |"
echo "|---|---:|---:|"
for i in "${!configs[@]}"; do
  read -r -a v <<< "${times[$i]}"
  sorted=$(printf '%s\n' "${v[@]}" | sort -g)
  med=$(printf '%s\n' "$sorted" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
  echo "| ${configs[$i]} | $med | $(head -1 <<< "$sorted")–$(tail -1 <<< "$sorted") |"
done
