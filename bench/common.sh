# common.sh - set-up shared by the SmolLM2 benchmarks (sourced from the repository root by
# bench_infer.sh and bench_quant.sh, which set OUT, BIN and PY first): checks the model,
# builds edgeforge and the bandwidth probe, and makes the F32/F16 GGUF copies once.
SRC=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# OMP_WAIT_POLICY is left as the caller set it: libgomp's default (spin a while, then
# sleep) is what users get, and waking a sleeping thread costs ~15 us per parallel region
# here against ~2 us (bench/bench_omp.c), ~150 regions per decode step. On a machine
# oversubscribed by other jobs, OMP_WAIT_POLICY=passive avoids spinning threads that
# collapse when descheduled. (llama.cpp opens one region per graph and spins at its own
# barriers, so the policy barely touches it.)
[ -f "$SRC" ] || { echo "error: $SRC missing (run scripts/fetch-smollm2.sh)" >&2; exit 1; }
mkdir -p "$OUT"
[ -x "$BIN" ] || make -s "$BIN"
cc -O2 -fopenmp -o "$OUT/bench_bw" bench/bench_bw.c
cc -O2 -fopenmp -o "$OUT/bench_omp" bench/bench_omp.c
for p in f32 f16; do
  [ -f "$OUT/smollm2-$p.gguf" ] || "$PY" bench/make_gguf.py "$SRC" "$OUT/smollm2-$p.gguf" $p
done
