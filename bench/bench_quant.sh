#!/bin/sh
# bench_quant.sh - issue 5: edgeforge GPTQ w4a16 (SmolLM2-135M-Instruct) against edgeforge F32 /
# F16 and llama.cpp Q4_0 / Q4_K_M of the same model, in one run, same thread count:
#   prefill tokens/s (512-token prompt, one batch) and decode tokens/s (128 tokens after it),
#   ratios to w4a16, decode as a fraction of the memory-bandwidth roofline (read bandwidth
#   measured by bench/bench_bw.c); then GPTQ wall time of one layer against tools/gptq_ref.py
#   (PyTorch) on the same CPU, same shape, same token count.
#
# Usage: bench/bench_quant.sh [THREADS] [REPS]      (default: 2, 3; best of REPS)
# Env: EDGEFORGE (default build/edgeforge), PYTHON (default python3, needs gguf,
#   llama-cpp-python, torch), BENCH_DIR (default bench/out), GPTQ_GROUP (128), GPTQ_NSAMPLES (32),
#   GPTQ_SEQLEN (128), KV_CACHE (edgeforge's KV cache type: f16, the default, as llama.cpp's
#   default, or f32), SKIP_GPTQ_TIMING=1 to skip the last part.
# Needs models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2.sh) and
# data/benchmarks/hellaswag (calibration text, tools/hellaswag_text.py).
# Everything derived (F32/F16/Q4_0/Q4_K_M GGUFs, the HF F32 copy, the GPTQ checkpoint) is made
# once into $BENCH_DIR. All models come from the one Q4_1 GGUF (dequantized to F32), so every
# row holds the same weights up to its own quantization.
# Prints markdown for bench/RESULTS.md.
set -e
cd "$(dirname "$0")/.."
T=${1:-2}
R=${2:-3}
PY=${PYTHON:-python3}
OUT=${BENCH_DIR:-bench/out}
BIN=${EDGEFORGE:-build/edgeforge}
G=${GPTQ_GROUP:-128}
NS=${GPTQ_NSAMPLES:-32}
SL=${GPTQ_SEQLEN:-128}
KV=${KV_CACHE:-f16}
case $KV in f16) KVB=2 ;; f32) KVB=4 ;; *) echo "KV_CACHE must be f16 or f32" >&2; exit 2 ;; esac
. bench/common.sh

# ---- models -------------------------------------------------------------------------------
for q in q4_0 q4_k_m; do
  [ -f "$OUT/smollm2-$q.gguf" ] || "$PY" bench/bench_quant.py quantize "$OUT/smollm2-f32.gguf" \
                                       "$OUT/smollm2-$q.gguf" $q "$T"
done
[ -d "$OUT/smollm2-hf-f32" ] || "$BIN" convert -f hf --dtype f32 "$SRC" "$OUT/smollm2-hf-f32"
[ -f "$OUT/hs_calib.txt" ] || "$PY" tools/hellaswag_text.py "$OUT/hs_calib.txt" "$OUT/hs_heldout.txt"
W4="$OUT/smollm2-w4a16-g$G"
qt=""
if [ ! -d "$W4" ]; then
  t0=$(date +%s.%N)
  OMP_NUM_THREADS=$T "$BIN" quantize "$OUT/smollm2-hf-f32" --calib "$OUT/hs_calib.txt" --out "$W4" \
      --bits 4 --group "$G" --nsamples "$NS" --seq-len "$SL" --seed 0 -t "$T" \
      > "$OUT/quantize-g$G.log" 2>&1
  qt=$(echo "$t0 $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
fi
W4H="$W4-lmhead"  # lm_head quantized too (--lm-head), the embedding untied and kept 16-bit
[ -d "$W4H" ] || OMP_NUM_THREADS=$T "$BIN" quantize "$OUT/smollm2-hf-f32" --calib "$OUT/hs_calib.txt" \
    --out "$W4H" --bits 4 --group "$G" --nsamples "$NS" --seq-len "$SL" --seed 0 -t "$T" --lm-head \
    > "$OUT/quantize-g$G-lmhead.log" 2>&1

# ---- inference ----------------------------------------------------------------------------
bw_once() { OMP_NUM_THREADS=$T "$OUT/bench_bw" 512 | awk '{print $2}'; }
bw=$(bw_once)
ef_once() {  # MODEL -> "pp tg"
  line=$(OMP_NUM_THREADS=$T "$BIN" generate "$1" --bench-prompt 512 -n 128 --ignore-eos --ids \
           --ctx 1024 -t "$T" --kv-cache "$KV" 2>&1 >/dev/null | grep 'tokens/s')
  echo "$line" | sed 's/.*prompt: [0-9]* tokens, \([0-9.]*\) tokens\/s; generated: [0-9]* tokens, \([0-9.]*\) tokens\/s.*/\1 \2/'
}
# The engines take turns, one run each per round, R rounds: this host's speed drifts by
# 10-20 % over minutes, and row after row (best of R each) let the drift decide ratios.
NAMES="edgeforge-w4a16-g$G edgeforge-w4a16-g$G+4-bit-lm_head edgeforge-F32 edgeforge-F16 llama.cpp-Q4_0 llama.cpp-Q4_K_M"
PATHS="$W4 $W4H $OUT/smollm2-f32.gguf $OUT/smollm2-f16.gguf $OUT/smollm2-q4_0.gguf $OUT/smollm2-q4_k_m.gguf"
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
r=0
while [ $r -lt "$R" ]; do
  bw=$(echo "$bw $(bw_once)" | awk '{print ($1 > $2) ? $1 : $2}')
  i=1
  for p in $PATHS; do
    name=$(echo "$NAMES" | cut -d' ' -f$i)
    case $name in
      llama.cpp-*) lc=$("$PY" bench/bench_llamacpp.py "$p" "$T" 512 128 1)
                   lcv=$(echo "$lc" | awk '{print $5, $6}')
                   res=$(echo "$lc" | awk '{print $2, $4}') ;;
      *) res=$(ef_once "$p") ;;
    esac
    echo "$i $name $p $res" >> "$runs"
    i=$((i + 1))
  done
  r=$((r + 1))
done
rows=""
i=1
for p in $PATHS; do  # best of R per row; weight bytes + the KV cache at the mean depth 576
  b=$("$PY" bench/bench_quant.py bytes "$p")  # (30 layers, 3 KV heads, dim 64, K and V)
  rows="$rows$(awk -v i=$i -v kv=$((b + 30 * 3 * 64 * KVB * 2 * 576)) '$1 == i {
    name = $2; if ($4 > pp) pp = $4; if ($5 > tg) tg = $5 } END { print name, pp, tg, kv }' "$runs")
"
  i=$((i + 1))
done

bw=$(echo "$bw $(bw_once)" | awk '{print ($1 > $2) ? $1 : $2}')
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "### w4a16 inference, $T thread(s)"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), CPU: $cpu, $(nproc) cores visible, threads: $T,"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset (libgomp default)}, $(OMP_NUM_THREADS=$T "$OUT/bench_omp"), load average at end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Command: \`EDGEFORGE=$BIN bench/bench_quant.sh $T $R\` (best of $R rounds, the engines taking turns"
echo "within each; prefill = 512-token"
echo "prompt in one batch, decode = 128 tokens after it; edgeforge's KV cache $KV, llama.cpp's f16;"
echo "llama.cpp: $lcv, n_batch 512)."
echo "Ratios are w4a16 / that row. Roofline = read bandwidth (bench/bench_bw.c, $T threads, best of"
echo "the measurements taken before each round and after the last: $bw GB/s, the same for every row) /"
echo "bytes per decode token (weights as stored, g_idx and an untied embedding excluded, + the $KV KV cache at the mean"
echo "depth 576 for every row)."
echo
echo "| engine, weights | pp512 t/s | w4a16 ÷ row | tg128 t/s | w4a16 ÷ row | bytes/token | decode % of roofline |"
echo "|---|---|---|---|---|---|---|"
printf "%s" "$rows" | awk -v bw="$bw" 'NR == 1 { pp0 = $2; tg0 = $3 } {
  printf "| %s | %.1f | %.2fx | %.2f | %.2fx | %.0f MB | %.0f %% |\n",
    $1, $2, pp0 / $2, $3, tg0 / $3, $4 / 1e6, 100 * $3 * $4 / (bw * 1e9) }'
echo
[ -n "$qt" ] && echo "GPTQ of the whole model (group $G, $NS x $SL calibration tokens, $T threads): $qt s wall." && echo

# ---- GPTQ wall time: one layer, edgeforge vs PyTorch ------------------------------------------
[ "${SKIP_GPTQ_TIMING:-0}" = 1 ] && exit 0
LIB=$(dirname "$BIN")/libedgeforge.a
make -s "$LIB"
TG="$OUT/bench_gptq"
# the OpenBLAS build the Makefile links (its OpenMP build when installed)
BLAS="/usr/lib/$(cc -print-multiarch)/openblas-openmp/libopenblas.so.0"
[ -f "$BLAS" ] || BLAS=-lopenblas
# shellcheck disable=SC2046
cc -std=c11 -O2 -D_GNU_SOURCE -Isrc bench/bench_gptq.c "$LIB" \
   $(pkg-config --libs jansson libpcre2-8 hiredis libcurl 2>/dev/null ||
     echo -ljansson -lpcre2-8 -lhiredis -lcurl) $BLAS -lm -lpthread -fopenmp -o "$TG"
echo "### GPTQ wall time, one layer, $T thread(s)"
echo
echo "W (1536, 576) and (576, 1536) [gate/up and down of SmolLM2-135M], 128 sequences x 512 tokens"
echo "of calibration, 4 bits, group 128, sym, damp 0.01. edgeforge: \`$TG layer\` (bench/bench_gptq.c); PyTorch:"
echo "\`tools/gptq_ref.py bench\` (float32 and float64). Both with $T threads."
echo
echo '```'
OMP_NUM_THREADS=$T "$TG" layer
for shape in "1536 576" "576 1536"; do
  set -- $shape
  for dt in float32 float64; do
    OMP_NUM_THREADS=$T "$PY" tools/gptq_ref.py bench --rows "$1" --cols "$2" --threads "$T" --dtype $dt
  done
  OMP_NUM_THREADS=$T "$PY" tools/gptq_ref.py bench --rows "$1" --cols "$2" --threads "$T" --dtype float32 --act-order 2>/dev/null || true
done
echo '```'
