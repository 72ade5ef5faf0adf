# Sourced by the benchmarks. measure CMD...: runs CMD $runs times (default 3) and prints
# "SECONDS MAX_RSS_KB" of the median-time run (GNU time).
measure() {
    local results=() log runs=${runs:-3}
    log=$(mktemp)
    for _ in $(seq "$runs"); do
        /usr/bin/time -o "$log" -f '%e %M' "$@" > /dev/null 2>&1
        results+=("$(tail -n 1 "$log")")
    done
    rm -f "$log"
    printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p"
}
