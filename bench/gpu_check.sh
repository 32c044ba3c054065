#!/usr/bin/env bash
# GPU check for spfl: the CUDA training tests (exact float32), one whole paper cell through `spfl run`
# (7 methods, K = 20, 500 rounds, CIFAR-shaped synthetic data) in float32, then in tf32 and bfloat16
# (their accuracy next to float32's), the projected time of the full paper configuration, the
# round benchmark (floor, reference, sequential vs batched) and the cell's methods one after another
# vs in lockstep with overlap (OVERLAP_ROUNDS rounds, default 60).  Made to be handed to a GPU machine with no
# network and run unattended in under 6 minutes (GPU_CHECK_BUDGET_S); it always writes its JSON, also
# when steps fail or time out, and skips what no longer fits the budget (most important steps first).
#
#   bench/gpu_check.sh [OUT_DIR] [WHEEL_DIR]
#
# OUT_DIR    where gpu_check.json (summary), one JSON per step and the logs go
#            (default: $OUT if set, else bench/out/gpu).
# WHEEL_DIR  wheels to install torch & co. from when the python found has no torch
#            (default: $WHEEL_DIR, else the first of $PIP_FIND_LINKS /opt/wheels ./wheels shared/wheels
#            that holds a torch wheel).  Installs use pip --no-index only: never the network.
# Env:       PYTHON (interpreter to try first), GPU_CHECK_BUDGET_S (total seconds, default 330),
#            REPEATS (round benchmark, default 5), GPU_CHECK_DEVICE (default cuda; cpu for a dry run of
#            the script itself on a machine without a GPU), and for dry runs: CELL_ROUNDS (default 500),
#            CELL_DEVICES (default: the paper's K), TRAIN_SIZE / TEST_SIZE (synthetic images, default
#            50000 / 10000), CELL_THREADS (torch CPU threads of `spfl run`, default 1).
# Dry run:   GPU_CHECK_DEVICE=cpu CELL_ROUNDS=2 CELL_DEVICES=4 TRAIN_SIZE=2000 TEST_SIZE=500 REPEATS=1 \
#            bench/gpu_check.sh /tmp/dry
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
OUT_DIR=${1:-${OUT:-bench/out/gpu}}
WHEELS=${2:-${WHEEL_DIR:-}}
BUDGET=${GPU_CHECK_BUDGET_S:-330}
REPEATS=${REPEATS:-5}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
CELL_ROUNDS=${CELL_ROUNDS:-}
CELL_DEVICES=${CELL_DEVICES:-}
TRAIN_SIZE=${TRAIN_SIZE:-50000}
TEST_SIZE=${TEST_SIZE:-10000}
CELL_THREADS=${CELL_THREADS:-1}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
STEPS="$OUT_DIR/steps.tsv"
LOG="$OUT_DIR/gpu_check.log"
: > "$STEPS"
: > "$LOG"
START=$(date +%s)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
THREADS=$(nproc 2>/dev/null || echo 4)
[ "$THREADS" -gt 8 ] && THREADS=8

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

# run_step NAME MAX_SECONDS CMD...: time-boxed by MAX_SECONDS and by what is left of the budget.
run_step() {
    local name=$1 max=$2 left rc t0
    shift 2
    left=$(( $(remaining) - 20 ))  # keep 20 s for the summary
    [ "$max" -gt "$left" ] && max=$left
    if [ "$max" -lt 10 ]; then
        log "$name: skipped (no time left)"
        printf '%s\tskipped\t-1\t0\n' "$name" >> "$STEPS"
        return 1
    fi
    log "$name: start (limit ${max}s): $(echo "$*" | tr -s '\n ' ' ' | head -c 200)"
    t0=$(date +%s)
    timeout --kill-after=10 "$max" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    local status=ok
    [ $rc -ne 0 ] && status=failed
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" >> "$STEPS"
    log "$name: $status (rc $rc, $(( $(date +%s) - t0 ))s)"
    tail -n 12 "$OUT_DIR/$name.log" | sed 's/^/    /' | tee -a "$LOG"
    return $rc
}

# Into $VENV (seeing the system's packages) from $WHEELS, never the network: torch with its dependencies
# if the wheel dir has them, else torch alone; then each other package that is not importable yet, one
# by one, so that one missing wheel does not block the rest.
install_from_wheels() {
    "$BASE" -m venv --system-site-packages "$VENV" || return 1
    local py="$VENV/bin/python" pkg
    "$py" -m pip install -q --no-index --find-links "$WHEELS" torch \
        || "$py" -m pip install -q --no-index --find-links "$WHEELS" --no-deps torch || return 1
    for pkg in numpy scipy pyyaml:yaml pytest filelock typing-extensions:typing_extensions sympy networkx \
               jinja2 fsspec; do
        "$py" -c "import ${pkg#*:}" 2> /dev/null \
            || "$py" -m pip install -q --no-index --find-links "$WHEELS" "${pkg%%:*}" \
            || echo "no wheel for ${pkg%%:*}"
    done
    "$py" -c "import torch; print('torch', torch.__version__)"
}

write_summary() {
    # Python merges everything into one JSON; if Python itself is broken, a bash fallback still writes one.
    if [ -n "${PY:-}" ] && timeout 30 "$PY" - "$OUT_DIR" "$BUDGET" "$(( $(date +%s) - START ))" "$DEVICE" <<'EOF'
import json, pathlib, platform, sys
out, budget, elapsed, device = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def read(name):
    p = out / name
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {"unreadable": p.read_text()[-2000:]}
steps = {}
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, rc, seconds = line.split("\t")
    steps[name] = {"status": status, "rc": int(rc), "seconds": int(seconds)}
text = lambda n: (out / n).read_text().strip() if (out / n).exists() else None
summary = {
    "host": platform.node(), "device": device, "budget_s": budget, "elapsed_s": elapsed,
    "nvidia_smi": text("nvidia_smi.txt"), "environment": read("environment.json"), "steps": steps,
    "results": {n: read(f"{n}.json") for n in (f"round_{device}", "paper_cell", "overlap")},
}
summary["ok"] = all(s["status"] == "ok" for s in steps.values()) and bool(steps)
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
EOF
    then
        log "summary: $OUT_DIR/gpu_check.json"
        return
    fi
    {
        echo "{\"fallback\": true, \"elapsed_s\": $(( $(date +%s) - START )), \"steps\": {"
        local first=1
        while IFS=$'\t' read -r name status rc seconds; do
            [ $first -eq 0 ] && echo ","
            first=0
            printf '"%s": {"status": "%s", "rc": %s, "seconds": %s}' "$name" "$status" "$rc" "$seconds"
        done < "$STEPS"
        echo "}, \"results\": {"
        first=1
        for n in "round_$DEVICE" paper_cell; do
            [ $first -eq 0 ] && echo ","
            first=0
            if [ -s "$OUT_DIR/$n.json" ]; then printf '"%s": ' "$n"; cat "$OUT_DIR/$n.json"
            else printf '"%s": null' "$n"; fi
        done
        echo "}}"
    } > "$OUT_DIR/gpu_check.json"
    log "summary (fallback, no working python): $OUT_DIR/gpu_check.json"
}
trap write_summary EXIT

# 1. The GPU as the driver sees it.
if command -v nvidia-smi > /dev/null; then
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu \
        --format=csv > "$OUT_DIR/nvidia_smi.txt" 2>&1 || log "nvidia-smi failed"
    cat "$OUT_DIR/nvidia_smi.txt" | tee -a "$LOG"
else
    log "nvidia-smi not found"
    echo "nvidia-smi not found" > "$OUT_DIR/nvidia_smi.txt"
fi

# 2. A python with torch: the project's venv, $PYTHON, python3; else install torch from local wheels.
PY=""
for candidate in ${PYTHON:-} "$ROOT/.venv/bin/python" python3 python; do
    if command -v "$candidate" > /dev/null 2>&1 && timeout 60 "$candidate" -c "import torch" > /dev/null 2>&1; then
        PY=$(command -v "$candidate")
        break
    fi
done
if [ -z "$PY" ]; then
    log "no python with torch; looking for wheels"
    for dir in "$WHEELS" ${PIP_FIND_LINKS:-} /opt/wheels "$ROOT/wheels" "$ROOT/shared/wheels" "$HOME/wheels"; do
        if [ -n "$dir" ] && ls "$dir"/torch-*.whl > /dev/null 2>&1; then WHEELS=$dir; break; fi
    done
    BASE=$(command -v python3 || command -v python || true)
    if [ -n "$WHEELS" ] && [ -n "$BASE" ]; then
        export VENV="${TMPDIR:-/tmp}/spfl-gpu-venv" WHEELS BASE
        run_step install 240 bash -c "$(declare -f install_from_wheels); install_from_wheels"
        timeout 60 "$VENV/bin/python" -c "import torch" > /dev/null 2>&1 && PY="$VENV/bin/python"
    else
        log "no wheel directory with a torch wheel found (tried: ${WHEELS:-none given}, \$PIP_FIND_LINKS, /opt/wheels, ./wheels, shared/wheels)"
    fi
fi
if [ -z "$PY" ]; then
    log "giving up: no python with torch"
    exit 1
fi
timeout 60 "$PY" - "$OUT_DIR/environment.json" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys, torch
info = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
        "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if info["cuda_available"]:
    info.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                bf16_supported=torch.cuda.is_bf16_supported())
try:
    import spfl.simulator.simulation  # noqa: F401
    info["spfl_import"] = "ok"
except Exception as exc:  # recorded, not fatal here: the steps below report their own failures
    info["spfl_import"] = f"{type(exc).__name__}: {exc}"
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(info)
EOF
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
[ "$CUDA" = "1" ] || log "CUDA is not available to torch: the CUDA steps will fail and say so"

# 3. The training tests that need CUDA (exact float32 against the CPU) and the precision-mode tests.
if "$PY" -c "import pytest" > /dev/null 2>&1; then
    run_step tests 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_training.py -k "cuda or precision or tf32"
else
    log "tests: skipped (no pytest)"
    printf 'tests\tskipped\t-1\t0\n' >> "$STEPS"
fi

# 4. One paper cell through `spfl run`: float32 alone (its time is the projection's basis), then tf32 and
#    bfloat16 side by side on the same GPU (their accuracy is the point; their time is shared).
CELL_DIR="$OUT_DIR/cell"
DATA_FILE="${TMPDIR:-/tmp}/spfl-gpu-check-$$/data.pt"  # 0.7 GB at full size: kept out of OUT_DIR
run_step cell_prepare 60 "$PY" bench/paper_cell.py prepare "$CELL_DIR" --data "$DATA_FILE" --train "$TRAIN_SIZE" \
    --test "$TEST_SIZE" ${CELL_ROUNDS:+--rounds "$CELL_ROUNDS"} ${CELL_DEVICES:+--devices "$CELL_DEVICES"} \
    --device "$DEVICE"

# run_cell PRECISION LIMIT [NOTE]: `spfl run` of the cell's methods; writes CELL_DIR/cell_PRECISION.seconds
# ("<wall seconds> <note>") also when the run fails or is stopped at LIMIT seconds.
run_cell() {
    local precision=$1 limit=$2 t0 rc ms note=${3:-}
    t0=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$PY" -m spfl.cli run "$CELL_DIR/cell.yaml" --methods "$(cat "$CELL_DIR/methods.txt")" \
        --set precision="$precision" --threads "$CELL_THREADS" --out "$CELL_DIR/cell_$precision" \
        --log "$CELL_DIR/cell_$precision.log"
    rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ $rc -ne 0 ] && note="${note:+$note; }rc $rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && note="${note:+$note; }stopped at the ${limit} s limit"
    printf '%d.%03d %s\n' $(( ms / 1000 )) $(( ms % 1000 )) "$note" > "$CELL_DIR/cell_$precision.seconds"
    return $rc
}
# cell_limit MAX: MAX, or what the budget leaves less 50 s: run_step's margin, the cell summary and the
# final JSON, so that a cell stopped at its limit still writes its seconds and the summary still runs.
cell_limit() { local left=$(( $(remaining) - 50 )); [ "$1" -gt "$left" ] && echo "$left" || echo "$1"; }
export PY CELL_DIR CELL_THREADS
if [ -s "$CELL_DIR/cell.yaml" ]; then
    limit=$(cell_limit 150)
    run_step cell_float32 $(( limit + 10 )) bash -c "$(declare -f run_cell); run_cell float32 $limit"
    limit=$(cell_limit 130)
    run_step cell_tf32_bfloat16 $(( limit + 10 )) bash -c "$(declare -f run_cell); run_cell tf32 $limit 'side by side with bfloat16' & p1=\$!; \
        run_cell bfloat16 $limit 'side by side with tf32' & p2=\$!; wait \$p1; a=\$?; wait \$p2; b=\$?; exit \$(( a > b ? a : b ))"
    # Always (also when the cells ran out of time): what finished is summarized.
    log "cell_summary:"
    timeout 30 "$PY" bench/paper_cell.py summarize "$CELL_DIR" 2>&1 | tee "$OUT_DIR/cell_summary.log" | tee -a "$LOG"
    cp "$CELL_DIR/paper_cell.json" "$OUT_DIR/paper_cell.json" 2> /dev/null
fi
# 5. Round benchmark: floor, reference, sequential vs batched per-device gradients (exact float32).
run_step "round_$DEVICE" 60 "$PY" bench/bench_round.py --device "$DEVICE" --paths sequential,batched --repeats "$REPEATS" \
    --threads "$THREADS" --train-size "$TRAIN_SIZE" ${CELL_DEVICES:+--devices "$CELL_DEVICES"} \
    --json "$OUT_DIR/round_$DEVICE.json"

# 6. A cell's methods one after another vs in lockstep with overlap (the GPU default): time and identity.
if [ -s "$CELL_DIR/cell.yaml" ]; then
    run_step overlap 60 "$PY" bench/paper_cell.py overlap "$CELL_DIR" --rounds "${OVERLAP_ROUNDS:-60}"
    cp "$CELL_DIR/overlap.json" "$OUT_DIR/overlap.json" 2> /dev/null
fi
rm -rf "$(dirname "$DATA_FILE")"
log "done in $(( $(date +%s) - START ))s"
