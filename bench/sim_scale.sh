#!/bin/sh
# The simulator runs of docs/evaluation.md, one at a time, at low priority.
# Each writes results/sim/<name>/metrics.json (with wall time, peak RSS and
# per-phase progress under "resources") and the PNG plots.
#   bench/sim_scale.sh            # the small and 10^4 runs (minutes)
#   bench/sim_scale.sh full       # also 10^5 nodes, 1,500 groups (about an hour here)
set -eu
cd "$(dirname "$0")/.."
out=results/sim
mkdir -p "$out"
run() {
    name=$1
    shift
    echo "== $name: hamcast sim $*" >&2
    nice -n 10 .venv/bin/hamcast sim "$@" --progress --out "$out/$name" >"$out/$name.txt"
    cat "$out/$name.txt"
}
for n in 100 200 500 1000; do
    run "n$n" --nodes "$n" --groups 10 --seed 1
done
run churn-1000 --nodes 1000 --groups 10 --seed 1 --churn 0.1
run n10k-paper --nodes 10000 --groups 1500 --sizes zipf --profile large --topology paper --seed 1
if [ "${1:-}" = full ]; then
    run n100k-paper --nodes 100000 --groups 1500 --sizes zipf --profile large --topology paper --seed 1
fi
