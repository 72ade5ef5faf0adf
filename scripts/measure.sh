# Sourced by the benchmarks (which run from the repository root).
# measure CMD...: runs CMD $runs times (default 3; its output discarded) and prints
# "SECONDS MAX_RSS_KB PEAK_PSS_KB" of the median-time run: wall time and the largest single process's
# peak RSS (GNU time's %e and %M), and the peak of the PSS summed over CMD's whole process tree,
# sampled every 0.15 s by scripts/bench-pss.py (nnU-Net's worker processes included, which %M misses).
# measure_once OUTPUT CMD...: runs CMD once, its stdout and stderr to the file OUTPUT, and prints the same.
# A failing CMD stops the benchmark with its last lines of output.
# row LABEL "S RSS PSS" prints one result; ratio LABEL "OURS" "THEIRS" prints ours / theirs for each
# figure. A figure written "-" is unknown (nnU-Net's recorded figures have no PSS).
bench_pss=$(realpath "$(dirname "${BASH_SOURCE[0]}")/bench-pss.py")

measure_once() {
    local output=$1 log pss
    shift
    log=$(mktemp) pss=$(mktemp)
    if ! python3 "$bench_pss" "$pss" /usr/bin/time -o "$log" -f '%e %M' "$@" > "$output" 2>&1; then
        echo "measure: failed: $*" >&2
        tail -n 5 "$output" >&2
        rm -f "$log" "$pss"
        kill "$$"  # called in a subshell ($(...) or <(...)): stop the benchmark itself
        return 1
    fi
    echo "$(tail -n 1 "$log") $(cat "$pss")"
    rm -f "$log" "$pss"
}

measure() {
    local results=() output runs=${runs:-3}
    output=$(mktemp)
    for _ in $(seq "$runs"); do
        results+=("$(measure_once "$output" "$@")")
    done
    rm -f "$output"
    printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p"
}

row() {
    python3 - "$@" <<'PY'
import sys
label, (seconds, rss, pss) = sys.argv[1], sys.argv[2].split()
mb = lambda kb: "   n/a" if kb == "-" else f"{int(kb) / 1024:6.0f}"
print(f"{label:44} {float(seconds):8.2f} s  peak RSS {mb(rss)} MB  peak PSS (tree) {mb(pss)} MB")
PY
}

ratio() {
    python3 - "$@" <<'PY'
import sys
label, ours, theirs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def r(i):
    return "n/a" if "-" in (ours[i], theirs[i]) else f"{float(ours[i]) / float(theirs[i]):.3f}"
faster = float(theirs[0]) / float(ours[0])
print(f"{label} ratio nn-tools / nnU-Net: time {r(0)} ({faster:.2f}x faster), peak RSS {r(1)}, peak PSS (tree) {r(2)}")
PY
}
