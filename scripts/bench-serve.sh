#!/usr/bin/env bash
# Per-case latency and throughput of nn-serve with the reference nnU-Net model (../shared/reference/infer)
# loaded once, against a fresh process per case: nn-infer (model load and libtorch start-up included) and
# nnU-Net v2.8.1's nnUNetv2_predict_from_modelfolder (given a folder holding that one image), all with
# the same options: fp32 (--precision auto), mirroring TTA on (nnU-Net's default), then off.
# For each of TTA / no TTA it prints mean, p50 and p99 of the wall time per case of
#   - nn-infer, one process per image (and its largest peak RSS, scripts/measure.sh),
#   - nnUNetv2_predict_from_modelfolder, one call per image (peak RSS and peak PSS of its process tree),
#   - nn-serve, warm: each image POSTed once to /v1/predict with curl, one request at a time (client-side
#     latency, curl's time_total), then requests per second with BENCH_SERVE_CLIENTS (default 4)
#     concurrent clients sharing the images (nn-serve predicts one request at a time, so more clients
#     only overlap the work around the predictions; on 2 cores they cannot add much),
# and the ratios warm p50 / fresh nn-infer p50 (issue 23's goal: at most 0.3) and warm p50 /
# nnUNetv2_predict p50. Every answer of nn-serve, sequential and concurrent, must be byte-identical to
# nn-infer's file for that image at the same options, or the benchmark stops. Also printed: nn-serve's
# time from start to /healthz 200 (model loaded) and its peak RSS (VmHWM) over the whole run. Each side
# first predicts the first image once untimed (without TTA), so that no timed call reads the libraries
# from disk.
# Usage: scripts/bench-serve.sh [--install]
#   BENCH_SERVE_CASES=N: only the first N images, to rehearse (the full run is all 16)
#   BENCH_SERVE_TTA=both|on|off: which modes to measure (default both)
#   BENCH_SERVE_DEVICE=cpu|cuda (default cpu): the device of every side
#   BENCH_SERVE_CLIENTS=N: concurrent clients of the throughput pass (default 4)
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh), with its own results folder of the same model
# (reference/infer/nnunet_results, whose network_weights equal model/'s bit for bit); without it, its
# rows are left out. libtorch's thread count is its default (-j unset) in nn-infer and nn-serve alike,
# as the bytes of the answers depend on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/measure.sh
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; shift; fi
reference=$(realpath ../shared/reference/infer)
model=$reference/model
nnunet_model=$reference/nnunet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres
device=${BENCH_SERVE_DEVICE:-cpu}
clients=${BENCH_SERVE_CLIENTS:-4}
case ${BENCH_SERVE_TTA:-both} in
    both) modes=(tta notta) ;;
    on) modes=(tta) ;;
    off) modes=(notta) ;;
    *) echo "bench-serve: BENCH_SERVE_TTA must be both, on or off" >&2; exit 2 ;;
esac
command -v curl > /dev/null || { echo "bench-serve: needs curl (apt-get install -y curl)" >&2; exit 2; }
scripts/setup.sh
scratch=$(mktemp -d)
serve_pid=
cleanup() {
    if [[ -n $serve_pid ]]; then kill -KILL "$serve_pid" 2> /dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT
mapfile -t images < <(find "$reference/images" -name '*.nii.gz' | sort | head -n "${BENCH_SERVE_CASES:-1000}")
if ((clients > ${#images[@]})); then clients=${#images[@]}; fi
# case_of IMAGE: the case name, as nn-infer and nnU-Net name their outputs
case_of() {
    local name
    name=$(basename "$1")
    echo "${name%_0000.nii.gz}"
}

# summary LABEL FILE [EXTRA]: n, mean, p50 and p99 (linear interpolation, as numpy.percentile) of the
# seconds in FILE (one a line), then EXTRA
summary() {
    python3 - "$@" <<'PY'
import statistics, sys
label, path, extra = sys.argv[1], sys.argv[2], " ".join(sys.argv[3:])
values = sorted(float(line) for line in open(path) if line.strip())
def percentile(p):
    rank = (len(values) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)
print(f"{label:58} n={len(values):<3} mean {statistics.fmean(values):7.3f} s  p50 {percentile(50):7.3f} s"
      f"  p99 {percentile(99):7.3f} s  {extra}".rstrip())
PY
}
# p50 FILE: the median of the seconds in FILE
p50() {
    python3 -c "import statistics, sys; print(statistics.median(float(l) for l in open(sys.argv[1]) if l.strip()))" "$1"
}
# largest_mb FILE COLUMN: the largest kB figure in COLUMN (1-based) of FILE, in MB
largest_mb() {
    awk -v c="$2" '$c > m { m = $c } END { printf "%.0f MB", m / 1024 }' "$1"
}
seconds_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'
}

# 1. a fresh nn-infer per case: "SECONDS MAX_RSS_KB PEAK_PSS_KB" per image into $scratch/fresh_MODE.txt
measure_once "$scratch/infer.log" target/release/nn-infer -q --device "$device" -m "$model" -i "${images[0]}" \
    -o "$scratch/warmup" --no-tta > /dev/null
for mode in "${modes[@]}"; do
    flags=()
    if [[ $mode == notta ]]; then flags=(--no-tta); fi
    for image in "${images[@]}"; do
        measure_once "$scratch/infer.log" target/release/nn-infer -q --device "$device" -m "$model" -i "$image" \
            -o "$scratch/fresh_$mode" "${flags[@]}" >> "$scratch/fresh_$mode.txt"
    done
done

# 2. nnUNetv2_predict_from_modelfolder per case, each on a folder holding only that image
nnunet=0
if [[ -x $venv/bin/nnUNetv2_predict_from_modelfolder ]]; then
    nnunet=1
    for image in "${images[@]}"; do
        mkdir "$scratch/one_$(case_of "$image")"
        ln -s "$image" "$scratch/one_$(case_of "$image")/"
    done
    # theirs IMAGE OUTPUT_FOLDER FLAGS...: one call on the folder holding only IMAGE
    theirs() {
        measure_once "$scratch/nnunet.log" env nnUNet_raw="$scratch" nnUNet_preprocessed="$scratch" \
            nnUNet_results="$scratch" "$venv/bin/nnUNetv2_predict_from_modelfolder" -m "$nnunet_model" -f 0 \
            -device "$device" -i "$scratch/one_$(case_of "$1")" -o "$2" --disable_progress_bar "${@:3}"
    }
    theirs "${images[0]}" "$scratch/warmup_theirs" --disable_tta > /dev/null
    for mode in "${modes[@]}"; do
        flags=()
        if [[ $mode == notta ]]; then flags=(--disable_tta); fi
        for image in "${images[@]}"; do
            theirs "$image" "$scratch/theirs_$mode" "${flags[@]}" >> "$scratch/theirs_$mode.txt"
        done
    done
else
    echo "nnU-Net not installed in $venv (run with --install): no nnUNetv2_predict rows"
fi

# 3. nn-serve: started once, port read from its stderr, ready when /healthz answers 200
started=$EPOCHREALTIME
target/release/nn-serve -q --device "$device" -m "$model" --listen 127.0.0.1:0 2> "$scratch/serve.log" &
serve_pid=$!
url=
for _ in $(seq 600); do
    url=$(sed -n 's|^nn-serve: listening on ||p' "$scratch/serve.log")
    if [[ -n $url ]]; then break; fi
    kill -0 "$serve_pid" 2> /dev/null || { echo "bench-serve: nn-serve failed:" >&2; cat "$scratch/serve.log" >&2; exit 1; }
    sleep 0.1
done
if [[ -z $url ]]; then echo "bench-serve: nn-serve printed no address:" >&2; cat "$scratch/serve.log" >&2; exit 1; fi
while [[ $(curl -s -o /dev/null -w '%{http_code}' "$url/healthz") != 200 ]]; do
    kill -0 "$serve_pid" 2> /dev/null || { echo "bench-serve: nn-serve failed:" >&2; cat "$scratch/serve.log" >&2; exit 1; }
    sleep 0.05
done
load_seconds=$(seconds_since "$started")

# post QUERY IMAGE OUTPUT: one request; prints curl's time_total; stops the benchmark on any error
post() {
    if ! curl -sS --fail-with-body -w '%{time_total}\n' -o "$3" --data-binary "@$2" "$url/v1/predict?$1"; then
        echo "bench-serve: request for $2 failed: $(cat "$3" 2> /dev/null)" >&2
        kill "$$"
        return 1
    fi
}
# same MODE FOLDER: every answer in FOLDER equals nn-infer's file at the same options
same() {
    local image
    for image in "${images[@]}"; do
        if ! cmp -s "$scratch/fresh_$1/$(case_of "$image").nii.gz" "$2/$(case_of "$image").nii.gz"; then
            echo "bench-serve: error: nn-serve's answer for $(case_of "$image") ($1) differs from nn-infer's file" >&2
            exit 1
        fi
    done
}

for mode in "${modes[@]}"; do
    query=tta=true
    if [[ $mode == notta ]]; then query=tta=false; fi
    post "$query" "${images[0]}" "$scratch/warmup.nii.gz" > /dev/null
    # (a) one request at a time
    mkdir "$scratch/serve_$mode"
    for image in "${images[@]}"; do
        post "$query" "$image" "$scratch/serve_$mode/$(case_of "$image").nii.gz" >> "$scratch/serve_$mode.txt"
    done
    same "$mode" "$scratch/serve_$mode"
    # (b) $clients clients, client k sending images k, k + clients, ... one after another
    mkdir "$scratch/concurrent_$mode"
    begun=$EPOCHREALTIME pids=()
    for ((k = 0; k < clients; k++)); do
        for ((i = k; i < ${#images[@]}; i += clients)); do
            post "$query" "${images[i]}" "$scratch/concurrent_$mode/$(case_of "${images[i]}").nii.gz"
        done > "$scratch/concurrent_$mode.$k.txt" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    seconds_since "$begun" > "$scratch/concurrent_$mode.wall"
    cat "$scratch/concurrent_$mode".*.txt > "$scratch/concurrent_$mode.txt"
    same "$mode" "$scratch/concurrent_$mode"
done
peak_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$serve_pid/status")
kill -TERM "$serve_pid"
for _ in $(seq 600); do
    kill -0 "$serve_pid" 2> /dev/null || break
    sleep 0.1
done
if kill -0 "$serve_pid" 2> /dev/null; then
    echo "bench-serve: nn-serve still runs 60 s after SIGTERM" >&2
    exit 1
fi
if ! wait "$serve_pid"; then
    echo "bench-serve: nn-serve did not exit 0 after SIGTERM:" >&2
    cat "$scratch/serve.log" >&2
    exit 1
fi
serve_pid=

# 4. results
echo "nn-serve ($device): model loaded and /healthz 200 after $load_seconds s; peak RSS $((peak_kb / 1024)) MB over the run"
for mode in "${modes[@]}"; do
    label="with TTA"
    if [[ $mode == notta ]]; then label="without TTA"; fi
    cut -d' ' -f1 "$scratch/fresh_$mode.txt" > "$scratch/fresh_$mode.s"
    summary "[$label] nn-infer, a fresh process per case" "$scratch/fresh_$mode.s" \
        "peak RSS $(largest_mb "$scratch/fresh_$mode.txt" 2)"
    if [[ $nnunet == 1 ]]; then
        cut -d' ' -f1 "$scratch/theirs_$mode.txt" > "$scratch/theirs_$mode.s"
        summary "[$label] nnUNetv2_predict_from_modelfolder per case" "$scratch/theirs_$mode.s" \
            "peak RSS $(largest_mb "$scratch/theirs_$mode.txt" 2), PSS (tree) $(largest_mb "$scratch/theirs_$mode.txt" 3)"
    fi
    requests=${#images[@]}
    summary "[$label] nn-serve warm, one request at a time" "$scratch/serve_$mode.txt" \
        "$(awk -v n="$requests" '{ s += $1 } END { printf "%.2f requests/s", n / s }' "$scratch/serve_$mode.txt")"
    summary "[$label] nn-serve warm, $clients concurrent clients" "$scratch/concurrent_$mode.txt" \
        "$(awk -v n="$requests" '{ printf "%.2f requests/s", n / $1 }' "$scratch/concurrent_$mode.wall")"
    warm=$(p50 "$scratch/serve_$mode.txt")
    python3 -c "import sys; print(f'[$label] warm nn-serve p50 / fresh nn-infer p50: {float(sys.argv[1]) / float(sys.argv[2]):.3f} (goal: at most 0.3)')" \
        "$warm" "$(p50 "$scratch/fresh_$mode.s")"
    if [[ $nnunet == 1 ]]; then
        python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'[$label] warm nn-serve p50 / nnUNetv2_predict p50: {a / b:.3f} ({b / a:.1f}x faster)')" \
            "$warm" "$(p50 "$scratch/theirs_$mode.s")"
    fi
done
echo "every answer of nn-serve equals nn-infer's file for that image, byte for byte"
