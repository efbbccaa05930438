# common.sh - set-up shared by the SmolLM2 benchmarks (sourced from the repository root by
# bench_infer.sh and bench_quant.sh, which set OUT, BIN and PY first): checks the model,
# builds edgeforge and the bandwidth probe, and makes the F32/F16 GGUF copies once.
SRC=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Both engines use libgomp (llama.cpp's CPU backend is built with OpenMP): threads that
# sleep at barriers instead of spinning are much faster on a shared, oversubscribed machine
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -f "$SRC" ] || { echo "error: $SRC missing (run scripts/fetch-smollm2.sh)" >&2; exit 1; }
mkdir -p "$OUT"
[ -x "$BIN" ] || make -s "$BIN"
cc -O2 -fopenmp -o "$OUT/bench_bw" bench/bench_bw.c
for p in f32 f16; do
  [ -f "$OUT/smollm2-$p.gguf" ] || "$PY" bench/make_gguf.py "$SRC" "$OUT/smollm2-$p.gguf" $p
done
