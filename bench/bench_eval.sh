#!/bin/sh
# bench_eval.sh - documents per second of `edgeforge eval` vs lm-evaluation-harness 0.4.9.1's
# Hugging Face backend (transformers, float32, CPU) on the same GGUF weights, the same tasks,
# documents, CPU and thread count, in one run; prints a Markdown section for bench/RESULTS.md.
#
# Usage: bench/bench_eval.sh [THREADS] [LIMIT] [TASKS]
#        (default: nproc, 20, arc_easy,openbookqa,piqa)
# Needs: models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, data/benchmarks, a Python with
# lm-eval 0.4.9.1 + transformers ($PYTHON, default python3), $EDGEFORGE
# (default build/edgeforge).
#
# Timing: edgeforge is timed as the whole process (model load + tokenizer + evaluation);
# lm-eval only inside simple_evaluate (model load excluded, reported separately), so the
# ratio is conservative for edgeforge. Batch 32 both (EF_BATCH, LM_BATCH). Scores are printed
# side by side.
set -e
cd "$(dirname "$0")/.."
T=${1:-$(nproc)}
N=${2:-20}
TASKS=${3:-arc_easy,openbookqa,piqa}
PY=${PYTHON:-python3}
BIN=${EDGEFORGE:-build/edgeforge}
EF_BATCH=${EF_BATCH:-32}  # edgeforge: questions per batch (its default)
LM_BATCH=${LM_BATCH:-32}  # lm-eval: requests per forward
MODEL=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=${BENCH_DIR:-/tmp/ef_bench_eval.$$}
[ -f "$MODEL" ] || { echo "error: $MODEL missing" >&2; exit 1; }
[ -x "$BIN" ] || { echo "error: $BIN not built" >&2; exit 1; }
mkdir -p "$OUT"
export OMP_NUM_THREADS=$T OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
DATA=$("$PY" tools/check_eval_parity.py --make-data-dir "$OUT/data")
load0=$(cut -d' ' -f1-3 /proc/loadavg)

t0=$(date +%s.%N)
"$BIN" eval "$MODEL" --tasks "$TASKS" --limit "$N" --batch "$EF_BATCH" -t "$T" --data-dir "$DATA" \
    --out "$OUT/ef.json" > "$OUT/ef.log" 2>&1 || { cat "$OUT/ef.log" >&2; exit 1; }
t1=$(date +%s.%N)
"$PY" bench/bench_eval_lmeval.py "$MODEL" --tasks "$TASKS" --limit "$N" --threads "$T" --batch "$LM_BATCH" \
    2> "$OUT/lm.log" | tail -1 > "$OUT/lm.json" || { tail -20 "$OUT/lm.log" >&2; exit 1; }
load1=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$OUT/ef.json" "$OUT/lm.json" "$t0" "$t1" "$T" "$N" "$TASKS" "$load0" "$load1" "$BIN" "$EF_BATCH" "$LM_BATCH" <<'PYEOF'
import json, sys, datetime, platform, os
ef, lm = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ef_s = float(sys.argv[4]) - float(sys.argv[3])
T, N, tasks, l0, l1, exe = sys.argv[5], int(sys.argv[6]), sys.argv[7], sys.argv[8], sys.argv[9], sys.argv[10]
efb, lmb = sys.argv[11], sys.argv[12]
docs = lm["documents"]
ef_dps, lm_dps = docs / ef_s, docs / lm["eval_s"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"### Evaluation run, {T} thread(s), {N} documents of {tasks}\n")
print(f"{now}, CPU: {cpu}, {os.cpu_count()} cores visible, threads: {T}; load average "
      f"before {l0}, after {l1}; torch {lm['torch']} ({lm['torch_threads']} threads), "
      f"transformers {lm['transformers']}, lm-eval 0.4.9.1 HFLM float32; batch: edgeforge {efb} "
      f"questions, lm-eval {lmb} requests.\n")
print(f"Command: `bench/bench_eval.sh {T} {N} {tasks}` (EDGEFORGE={exe})\n")
print("| | documents | seconds | documents/s |\n|---|---|---|---|")
print(f"| edgeforge eval (whole process, incl. load) | {docs} | {ef_s:.2f} | {ef_dps:.2f} |")
print(f"| lm-eval HF backend (simple_evaluate only; load {lm['load_s']:.1f} s excluded) | {docs} | "
      f"{lm['eval_s']:.2f} | {lm_dps:.2f} |")
print(f"\n**Ratio edgeforge / lm-eval: {ef_dps / lm_dps:.2f}x**\n")
print("| task | metric | edgeforge | lm-eval |\n|---|---|---|---|")
for t, r in ef["results"].items():
    for m in ("acc,none", "acc_norm,none"):
        if m in r:
            print(f"| {t} | {m.split(',')[0]} | {r[m]:.4f} | {lm['scores'].get(t, {}).get(m, float('nan')):.4f} |")
PYEOF
