#!/usr/bin/env bash
# GradCache's memory and time (issue 17): peak resident memory and step time of `native train`
# on the CPU (flex) at several batch sizes (pairs, + 1 hard-negative image each), without chunks
# and with `--grad-cache-chunk`. Each configuration is its own process, run under
# /usr/bin/time -v, whose "Maximum resident set size" is the process's peak RSS (VmHWM); the step
# time is the mean of the steps after the first (from metrics.jsonl's elapsed_s). Prints a
# markdown table on stdout. Settings by environment:
#   PRESET (small), BATCHES ("16 64 256"), CHUNK (16), STEPS (4: 3 timed), OUT (runs/bench-grad-cache)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${PRESET:-small}"
batches="${BATCHES:-16 64 256}"
chunk="${CHUNK:-16}"
steps="${STEPS:-4}"
out="${OUT:-runs/bench-grad-cache}"
mkdir -p "$out"
# The executable cargo reports (in a shared target folder, target/debug/native may be another
# checkout's), copied: it may be rebuilt by someone else while this runs.
built=$(cargo build -p native --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "native" and m.get("executable"):
        print(m["executable"])')
cp "$built" "$out/native"
native="$out/native"
"$native" train --help | grep -q -- --grad-cache-chunk || {
    echo "error: $built has no --grad-cache-chunk (another checkout's build in a shared target folder?)" >&2
    exit 1
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "| preset | pairs (+1 hard negative each) | grad-cache chunk | peak RSS (MiB) | step time (s) |"
echo "|---|---:|---:|---:|---:|"
for batch in $batches; do
    for c in none "$chunk"; do
        run="$out/$preset-b$batch-c$c"
        rm -rf "$run"
        flags=()
        [ "$c" != none ] && flags=(--grad-cache-chunk "$c")
        /usr/bin/time -v -o "$run.time" "$native" train --preset "$preset" --device cpu --steps "$steps" \
            --batch-size "$batch" --hard-negatives 1 --warmup 1 --eval-every 0 --eval-count 1 \
            --checkpoint-every 1000 --out "$run" "${flags[@]}" > "$run.log" 2>&1
        rss_kib=$(grep 'Maximum resident set size' "$run.time" | awk '{print $NF}')
        step_s=$(python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if "loss" in l]
e = [l["elapsed_s"] for l in lines]
print(f"{(e[-1] - e[0]) / (len(e) - 1):.2f}")' "$run/metrics.jsonl")
        echo "| $preset | $batch | $c | $((rss_kib / 1024)) | $step_s |"
    done
done
