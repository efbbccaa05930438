#!/bin/sh
# bench_infer.sh - edgeforge vs llama.cpp on SmolLM2-135M-Instruct, F32 and F16 weights,
# same GGUF file, same thread count, in one run:
#   prefill tokens/s for a 512-token prompt (one batch) and decode tokens/s for 128 tokens
#   after it; ratios edgeforge / llama.cpp; decode as a fraction of the memory-bandwidth
#   roofline, with the read bandwidth measured here by bench/bench_bw.c.
#
# Usage: bench/bench_infer.sh [THREADS] [REPS]      (default: nproc, 3; best of REPS)
# Needs: models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2.sh), a
# Python with gguf and llama-cpp-python ($PYTHON, default python3).
# Prints a markdown table for bench/RESULTS.md. F32/F16 GGUFs are made once into
# $BENCH_DIR (default build/bench) by bench/make_gguf.py (dequantizing the Q4_1 file).
set -e
cd "$(dirname "$0")/.."
T=${1:-$(nproc)}
R=${2:-3}
PY=${PYTHON:-python3}
OUT=${BENCH_DIR:-build/bench}
BIN=${EDGEFORGE:-build/edgeforge}
. bench/common.sh

# read bandwidth: best of a measurement before and one after the runs (a shared machine's
# bandwidth varies; the best is the ceiling the runs could have had)
bw_once() { OMP_NUM_THREADS=$T "$OUT/bench_bw" 512 | awk '{print $2}'; }
bw=$(bw_once)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "### Inference run, $T thread(s)"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), CPU: $cpu, $(nproc) cores visible, threads: $T,"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset (libgomp default)}; $(OMP_NUM_THREADS=$T "$OUT/bench_omp"); load average at start: $(cut -d' ' -f1-3 /proc/loadavg); read bandwidth (bench/bench_bw.c, $T threads, best"
echo "of the measurements so far when each row was printed) in the last column's denominator."
echo "Command: \`bench/bench_infer.sh $T $R\` (best of $R; prefill = 512-token prompt in one batch,"
echo "decode = 128 tokens after it)."
echo
echo "| weights | edgeforge pp512 t/s | llama.cpp pp512 t/s | ratio | edgeforge tg128 t/s | llama.cpp tg128 t/s | ratio | bytes/token | read BW | decode % of roofline |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for p in f32 f16; do
  g="$OUT/smollm2-$p.gguf"
  ef_pp=0; ef_tg=0
  i=0
  while [ $i -lt "$R" ]; do
    line=$(OMP_NUM_THREADS=$T "$BIN" generate "$g" --bench-prompt 512 -n 128 --ignore-eos --ids \
             --ctx 1024 -t "$T" 2>&1 >/dev/null | grep 'tokens/s')
    pp=$(echo "$line" | sed 's/.*prompt: [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/')
    tg=$(echo "$line" | sed 's/.*generated: [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1/')
    ef_pp=$(echo "$pp $ef_pp" | awk '{print ($1 > $2) ? $1 : $2}')
    ef_tg=$(echo "$tg $ef_tg" | awk '{print ($1 > $2) ? $1 : $2}')
    i=$((i + 1))
  done
  lc=$("$PY" bench/bench_llamacpp.py "$g" "$T" 512 128 "$R")
  lc_pp=$(echo "$lc" | awk '{print $2}')
  lc_tg=$(echo "$lc" | awk '{print $4}')
  # bytes a decode step reads: all tensor data (the classifier reads the whole embedding)
  # + the F32 KV cache at the mean depth 576 (30 layers, 3 KV heads, head dim 64, K and V)
  bw2=$(bw_once)
  bw=$(echo "$bw $bw2" | awk '{print ($1 > $2) ? $1 : $2}')
  bytes=$("$PY" -c "import gguf,sys; r=gguf.GGUFReader(sys.argv[1]); print(sum(int(t.n_bytes) for t in r.tensors) + 30*3*64*4*2*576)" "$g")
  echo "$p $ef_pp $lc_pp $ef_tg $lc_tg $bytes $bw" | awk '{
    printf "| %s | %.1f | %.1f | %.2fx | %.2f | %.2f | %.2fx | %.0f MB | %.1f GB/s | %.0f %% |\n",
      $1, $2, $3, $2 / $3, $4, $5, $4 / $5, $6 / 1e6, $7, 100 * $4 * $6 / ($7 * 1e9) }'
done
echo
echo "llama.cpp: $(echo "$lc" | awk '{print $5, $6}') (n_batch = n_ubatch = 512, its own thread pool)."
