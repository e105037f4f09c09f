#!/usr/bin/env bash
# The cluster and partition tests N times in a row while two busy loops keep both cores
# loaded: the flakes these tests once had showed only on a loaded machine.
#
#   tests/soak_clusters.sh [N] [pytest args...]     (N defaults to 20)
#
# Prints one line per run and, last, "passed P of N". Each run's pytest output is kept in
# $SOAK_LOGS (a temporary directory unless set), with its tests' temporary files (the
# nodes' and workers' logs) under run-<i>/, for reading a failure afterwards.
set -uo pipefail

runs="${1:-20}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python="python3"
logs="${SOAK_LOGS:-$(mktemp -d -t soak-clusters.XXXXXX)}"
mkdir -p "$logs"

burners=()
stop_burners() {
    for pid in "${burners[@]}"; do
        kill "$pid" 2>/dev/null
    done
    wait "${burners[@]}" 2>/dev/null
}
trap stop_burners EXIT
for _ in 1 2; do
    "$python" -c 'while True: pass' &
    burners+=("$!")
done

passed=0
for i in $(seq 1 "$runs"); do
    log="$logs/run-$i.log"
    if (cd "$root" && "$python" -m pytest -q -p no:cacheprovider --basetemp "$logs/run-$i" \
        tests/integration/test_cluster.py tests/integration/test_partition.py "$@") >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "run $i: passed ($(tail -n 1 "$log"))"
    else
        echo "run $i: FAILED ($(tail -n 1 "$log")); see $log"
    fi
done
echo "logs in $logs"
echo "passed $passed of $runs"
[ "$passed" -eq "$runs" ]
