#!/bin/sh
# bench_load.sh - model-loading benchmark: edgeforge vs llama.cpp (llama-cpp-python) vs
# transformers on SmolLM2-135M-Instruct (GGUF Q4_1 as published, plus an F16 GGUF and
# BF16/F32 Hugging Face directories converted from it by `edgeforge convert`).
#
#   sh bench/bench_load.sh                 # BUILD=build-iobench REPS=7 REPS_HF=5 PY=python3
#   BUILD=build sh bench/bench_load.sh     # use another build directory
#
# llama.cpp: through llama-cpp-python when importable, and through its C API
# (bench/bench_load_llamacpp.c) when LLAMACPP_DIR (default bench/out/llamacpp) holds include/
# (llama.h and ggml's headers from llama-cpp-python's vendor/llama.cpp) and lib/ (the
# libllama.so, libggml*.so that its source build makes).
#
# Output: a markdown table on stdout, raw numbers in bench/out/bench_load.json (bench/out/ is
# git-ignored, as are the converted models there). See bench/RESULTS.md, "Model loading".
set -eu
BUILD=${BUILD:-build-iobench}
REPS=${REPS:-7}
REPS_HF=${REPS_HF:-5}
PY=${PY:-python3}
GGUF=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=bench/out

[ -f "$GGUF" ] || sh scripts/fetch-smollm2.sh
make BUILD="$BUILD" "$BUILD/edgeforge" "$BUILD/libedgeforge.a" >/dev/null
PKG_LIBS=$(pkg-config --libs jansson libpcre2-8 hiredis libcurl 2>/dev/null ||
    echo -ljansson -lpcre2-8 -lhiredis -lcurl)
# shellcheck disable=SC2086
cc -std=c11 -O2 -D_GNU_SOURCE -Isrc bench/bench_load.c "$BUILD/libedgeforge.a" $PKG_LIBS \
    -lopenblas -lm -lpthread -fopenmp -o "$BUILD/bench_load"

LLAMACPP_DIR=${LLAMACPP_DIR:-$OUT/llamacpp}
LLAMACPP_ARG=
if [ -f "$LLAMACPP_DIR/include/llama.h" ] && [ -f "$LLAMACPP_DIR/lib/libllama.so" ]; then
    cc -O2 -I"$LLAMACPP_DIR/include" bench/bench_load_llamacpp.c -L"$LLAMACPP_DIR/lib" -lllama \
        -lggml -lggml-base -Wl,-rpath,"$(cd "$LLAMACPP_DIR/lib" && pwd)" -o "$BUILD/bench_load_llamacpp"
    LLAMACPP_ARG="--llamacpp-exe $BUILD/bench_load_llamacpp"
fi

mkdir -p "$OUT"
[ -f "$OUT/smollm2-f16.gguf" ] || "$BUILD/edgeforge" convert -f gguf --dtype f16 "$GGUF" "$OUT/smollm2-f16.gguf"
[ -d "$OUT/smollm2-hf-bf16" ] || "$BUILD/edgeforge" convert -f hf --dtype bf16 "$GGUF" "$OUT/smollm2-hf-bf16"
[ -d "$OUT/smollm2-hf-f32" ] || "$BUILD/edgeforge" convert -f hf --dtype f32 "$GGUF" "$OUT/smollm2-hf-f32"

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); before: $(uptime)"
# shellcheck disable=SC2086
"$PY" bench/bench_load.py --edgeforge "$BUILD/bench_load" $LLAMACPP_ARG --reps "$REPS" --reps-hf "$REPS_HF" \
    --gguf "$GGUF" --gguf "$OUT/smollm2-f16.gguf" \
    --hf "$OUT/smollm2-hf-bf16" --hf "$OUT/smollm2-hf-f32" --out "$OUT/bench_load.json"
echo "after: $(uptime)"
