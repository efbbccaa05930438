#!/bin/sh
# The main job on the bundled model (stories260K, 260K parameters, MIT): the paper's
# pipeline end to end in about a minute on 2 cores.
#
#   1. synth     the teacher T (stories260K) writes 240 stories  -> Alpaca JSONL
#                (+ 40 held-out stories as plain text for the fidelity report)
#   2. prune     a 2-layer student S is cut from T (layers 0 and 4)
#   3. distill   LoRA + logit KD from T into S (AdamW), merged     -> S'
#   4. quantize  GPTQ w4a16 (group min(128, K)) with a fidelity report -> S''
#   5. generate  S'' writes a story
#
#   sh scripts/pipeline.sh [WORKDIR]     (default: out/pipeline; needs build/edgeforge)
set -e
cd "$(dirname "$0")/.."
EF=${EF:-build/edgeforge}
# the model is tiny: one thread avoids OpenMP overhead that dominates at this size
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
W=${1:-out/pipeline}
T=models/stories260K/stories260K.bin
N=${N_STORIES:-240}
H=${N_HELDOUT:-40}   # extra stories kept out of training, for the fidelity report
mkdir -p "$W"

echo "== 1. synth: $N training + $H held-out stories from the teacher (temperature 0.8)"
: > "$W/stories.jsonl.tmp"
: > "$W/heldout.txt.tmp"
s=$((N + 1))
while [ "$s" -le $((N + H)) ]; do
  "$EF" -q generate "$T" --temp 0.8 --seed "$s" -n 64 -t 1 2>/dev/null >> "$W/heldout.txt.tmp"
  echo >> "$W/heldout.txt.tmp"
  s=$((s + 1))
done
mv "$W/heldout.txt.tmp" "$W/heldout.txt"
s=1
while [ "$s" -le "$N" ]; do
  "$EF" -q generate "$T" --temp 0.8 --seed "$s" -n 64 -t 1 2>/dev/null |
    awk 'BEGIN { ORS = "" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t");
         text = (NR > 1 ? text "\\n" : "") $0 }
         END { sub(/^ +/, "", text); print "{\"instruction\": \"Tell a story.\", \"input\": \"\", \"output\": \"" text "\"}\n" }' \
      >> "$W/stories.jsonl.tmp"
  s=$((s + 1))
done
mv "$W/stories.jsonl.tmp" "$W/stories.jsonl"

echo "== 2. prune: 2-layer student from layers 0 and 4"
rm -rf "$W/student"
"$EF" prune "$T" "$W/student" --keep-layers 0,4

echo "== 3. distill: LoRA r=8 + KD (alpha 1, T 1), AdamW, 3 epochs"
rm -rf "$W/distill"
"$EF" distill --student "$W/student" --teacher "$T" --data "$W/stories.jsonl" --out "$W/distill" \
  --optimizer adamw --epochs 3 --batch 8 --seq-len 192 --rank 8 --scale 2 --lr 3e-3 \
  --temperature 1 --alpha 1 --weight-decay 0 --warmup-ratio 0.05 --eval-every 9 --seed 1 --merge

echo "== 4. quantize: GPTQ 4-bit, group 128 (ragged: min(128, K)), 64 calibration sequences"
rm -rf "$W/student-gptq"
"$EF" quantize "$W/distill/merged" --calib "$W/stories.jsonl" --bits 4 --group 128 \
  --nsamples 64 --seq-len 128 --fidelity-data "$W/heldout.txt" --fidelity-chunks 8 --fidelity-ctx 256 --out "$W/student-gptq"

echo "== 5. generate with the 4-bit student"
"$EF" generate "$W/student-gptq" -p "Once upon a time" -n 48 --temp 0
