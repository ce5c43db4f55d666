#!/usr/bin/env sh
# The main benchmarks behind docs/benchmarks.md, as the document runs them (about 25 minutes on
# 2 cores). Tables go to the terminal and bench/results/*.txt, figures to bench/results/*.json.
# The A/B, two-process, paced-TTS and 3,000-call runs are listed with their commands in the doc.
# All traffic stays on 127.0.0.1; each script stops by itself.
set -e
cd "$(dirname "$0")/.."
out=bench/results
mkdir -p "$out"
run() { name=$1; file=$2; shift 2; python -m "bench.$name" --json "$out/$file.json" "$@" | tee "$out/$file.txt"; }
run codec codec
run frame_cost frame_cost
run turn_overhead turn_overhead
run turn_overhead turn_overhead-brain-burst --calls 100,150 --server-env ZYLIN_BENCH_BRAIN_BURST=1
run concurrency concurrency --steps 10,50,100,150,200,250,300 --keep-going --profile /tmp/zylin-concurrency
if [ -f /tmp/zylin-concurrency-200.txt ]; then
    python -m bench.profile_report /tmp/zylin-concurrency-200.txt --groups | tee "$out/profile-200.txt"
fi
run gc_pause gc_pause
run memory memory
run realistic realistic
run barge_in barge_in --min-speech-ms 250,300,350
run voices voices
run turn_ends turn_ends
