#!/usr/bin/env bash
# Modular arithmetic on one GPU within a fixed time: HQLT synchronous and DeltaNet, 3 seeds each (or the runs that
# RUNS names, below), all at once (each its own process, with its batches made ahead in a child process: --prefetch).
#
#   bash benchmarks/synthetic_gpu.sh OUT_DIR BUDGET_S [ROWS] [DEVICE] [SYNTHETIC.PY OPTIONS...]
#
# A probe first runs them for 60 steps side by side and times a step and an evaluation; the number of steps is
# then the largest multiple of 500 that fits the runs, five evaluations each, into BUDGET_S seconds. The steps
# chosen are printed and kept in every JSON (args.steps), so a run is repeated exactly with
#   python benchmarks/synthetic.py --tasks modular --models "HQLT synchronous" --seeds 1 --first-seed S
#       --steps N --pack --batch ROWS --lr 1e-3 --test-stride 8 --eval-every N/5 --device cuda [OPTIONS...]
# ROWS (default 512) packed rows of 40 tokens per step; DEVICE defaults to cuda; further options go to every run
# (e.g. --compile: the probe times the first step, where it compiles, apart from the others). At the end the whole
# of OUT_DIR (JSON and log of every run, probes included) is also packed into one file, OUT_DIR.tar.gz, beside it:
# a device that returns only a few files (the lent GPU machines here return 8) gets everything back in it, e.g.
#   bash benchmarks/synthetic_gpu.sh /tmp/sg 540 && cp /tmp/sg.tar.gz "$OUT"/
# BUDGET_S may instead be steps=N: no probe, N steps for every run (to match the steps of an earlier call).
# Three environment variables change the plan:
#   RUNS="MODEL:SEED,MODEL:SEED,..."  the runs, side by side (default: HQLT synchronous and DeltaNet x seeds 0-2);
#   MAX_STEPS=N                        the most steps the probe may choose (e.g. 20000, the paper's; default none);
#   EVALS=K                            evaluations per run, every steps/K (default 5).
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash benchmarks/synthetic_gpu.sh OUT_DIR BUDGET_S [ROWS] [DEVICE] [SYNTHETIC.PY OPTIONS...]"
out="${1:?$usage}"
budget="${2:?$usage}"
rows="${3:-512}"
device="${4:-cuda}"
shift $(( $# < 4 ? $# : 4 ))
fixed_steps=""
if [[ "$budget" =~ ^steps=([1-9][0-9]*)$ ]]; then
    fixed_steps="${BASH_REMATCH[1]}"
elif ! [[ "$budget" =~ ^[0-9]+$ ]]; then
    echo "BUDGET_S must be a whole number of seconds or steps=N (N steps, no probe), got '$budget'; $usage"
    exit 2
fi
mkdir -p "$out"
probe_steps=60
common=(--tasks modular --seeds 1 --pack --batch "$rows" --lr 1e-3 --test-stride 8 --device "$device" --prefetch "$@")
IFS=',' read -r -a runs <<< "${RUNS:-HQLT synchronous:0,HQLT synchronous:1,HQLT synchronous:2,DeltaNet:0,DeltaNet:1,DeltaNet:2}"
for run in "${runs[@]}"; do
    if ! [[ "$run" =~ ^[^:]+:[0-9]+$ ]]; then
        echo "RUNS must be MODEL:SEED entries separated by commas, got '$run' in '${RUNS:-}'; $usage"
        exit 2
    fi
done
evals="${EVALS:-5}"
max_steps="${MAX_STEPS:-0}"
if ! [[ "$evals" =~ ^[1-9][0-9]*$ && "$max_steps" =~ ^[0-9]+$ ]]; then
    echo "EVALS must be a whole number >= 1 and MAX_STEPS a whole number of steps, got EVALS='$evals'" \
        "MAX_STEPS='$max_steps'; $usage"
    exit 2
fi
start=$(date +%s)

launch() {  # launch STEPS TAG [extra args]: all the runs side by side, wait for them
    local steps="$1" tag="$2"; shift 2
    local pids=()
    for run in "${runs[@]}"; do
        local model="${run%%:*}" seed="${run##*:}" name
        name="${tag}_$(echo "$model" | tr -cd 'A-Za-z')_s${seed}"
        python3 benchmarks/synthetic.py "${common[@]}" --models "$model" --first-seed "$seed" --steps "$steps" \
            --json "$out/$name.json" "$@" > "$out/$name.log" 2>&1 &
        pids+=($!)
    done
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    return $failed
}

probe() {  # the runs for $probe_steps steps side by side; prints the steps that fit what is left of the budget
    launch "$probe_steps" probe || { echo "probe failed:" >&2; tail -n 5 "$out"/probe_*.log >&2; return 1; }
    local step_s first_s eval_s left chosen
    read -r step_s first_s eval_s < <(python3 - "$out" "$probe_steps" <<'PY'
import json, pathlib, sys
records = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).glob("probe_*.json")]
pairs = [(r, run) for r in records for m in r["results"].values() for t in m.values() for run in t["runs"]]
step = max((run["seconds"] - run["first_step_seconds"]) / (int(sys.argv[2]) - 1) for _, run in pairs)
first = max(run["first_step_seconds"] for _, run in pairs)
evaluation = max(r["wall_seconds"] - run["seconds"] for r, run in pairs)
print(f"{step:.4f} {first:.2f} {evaluation:.2f}")
PY
    )
    left=$(( budget - ($(date +%s) - start) ))
    chosen=$(python3 -c "
steps = max(500, int(($left - 30 - $first_s - ($evals + 1) * $eval_s) / $step_s) // 500 * 500)
print(min(steps, $max_steps) if $max_steps else steps)")
    echo "probe: $step_s s per step, first step $first_s s, $eval_s s per evaluation with ${#runs[@]} runs side by" \
        "side; $left s left -> $chosen steps${MAX_STEPS:+ (at most $max_steps)}" >&2
    echo "$chosen"
}

if [[ -n "$fixed_steps" ]]; then
    steps="$fixed_steps"
    echo "steps=$steps given: no probe"
else
    steps=$(probe) || exit 1
fi
every=$(( steps / evals > 0 ? steps / evals : 1 ))
launch "$steps" run --eval-every "$every"
status=$?
grep -h "^modular" "$out"/run_*.log  # model, seed, train and test accuracy of each run
tar czf "$out.tar.gz" -C "$(dirname "$out")" "$(basename "$out")"
echo "total $(( $(date +%s) - start )) s"
exit $status
