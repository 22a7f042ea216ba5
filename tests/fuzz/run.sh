#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD SECONDS TARGET...: runs each libFuzzer target for SECONDS under ASan+UBSan
# and prints one line per target: execs, execs/s, corpus size, crashes. Exit 1 if any target crashed.
#
# Each target starts from its committed seeds (tests/fuzz/corpus/<t>) and every input that ever failed
# (tests/fuzz/regressions/<t>); what it discovers goes to BUILD/corpus/<t>, never into the repository.
# A crashing input is saved as BUILD/artifacts/<t>/crash-*: fix the bug, then copy the file into
# tests/fuzz/regressions/<t>/ so `make test` replays it from then on.
set -u
BUILD=$1 SECONDS_EACH=$2
shift 2
status=0
printf '%-14s %12s %10s %8s %8s\n' target execs exec/s corpus crashes
for t in "$@"; do
  bin=$BUILD/fuzz/$t
  [[ -x $bin ]] || { echo "fuzz: $bin is missing" >&2; status=1; continue; }
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t" "$BUILD/logs" tests/fuzz/corpus/"$t" tests/fuzz/regressions/"$t"
  rm -f "$BUILD/artifacts/$t"/*
  log=$BUILD/logs/$t.log
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb also caps a single malloc.
  # -seed: the same mutation sequence on every run (FUZZ_SEED=0 draws a fresh one), so a CI smoke
  # explores a prefix of what a longer run with the same seed explored before.
  "$bin" -seed="${FUZZ_SEED:-1}" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$BUILD/artifacts/$t/" "$BUILD/corpus/$t" tests/fuzz/corpus/"$t" tests/fuzz/regressions/"$t" \
    > "$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(ls "$BUILD/corpus/$t" | wc -l)
  crashes=$(ls "$BUILD/artifacts/$t" | grep -c -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
  [[ $rc -ne 0 && $crashes -eq 0 ]] && crashes=1
  printf '%-14s %12s %10s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes"
  if [[ $crashes -ne 0 ]]; then
    status=1
    echo "fuzz: $t failed (exit $rc); log $log; inputs in $BUILD/artifacts/$t/" >&2
    grep -m3 -E 'ERROR|runtime error|SUMMARY|uncaught' "$log" | sed 's/^/    /' >&2
  fi
done
exit $status
