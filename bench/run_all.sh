#!/usr/bin/env sh
# Every benchmark behind docs/benchmarks.md, with its default settings (about 20 minutes on
# 2 cores). Tables go to the terminal and to bench/results/*.txt, figures to bench/results/*.json.
# All traffic stays on 127.0.0.1; each script stops by itself.
set -e
cd "$(dirname "$0")/.."
out=bench/results
mkdir -p "$out"
run() { name=$1; shift; python -m "bench.$name" --json "$out/$name.json" "$@" | tee "$out/$name.txt"; }
run codec
run frame_cost
run turn_overhead
run concurrency --profile /tmp/zylin-concurrency
python -m bench.profile_report /tmp/zylin-concurrency-200.txt --groups | tee "$out/profile-200.txt" || true
run memory
run realistic
