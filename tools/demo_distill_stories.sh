#!/bin/sh
# Demo on real weights (docs/training.md §6): a 2-layer student cut from the 5-layer
# stories260K (layers 0 and 4), distilled with LoRA + KD from the full model on 240 stories
# the teacher generated itself (temperature 0.8, seeds 1..240, 64 tokens each).
#
#   sh tools/demo_distill_stories.sh [WORKDIR]      (needs build/edgeforge and python3)
# Prints the validation CE of student and teacher before training and after.
set -e
EF=${EF:-build/edgeforge}
W=${1:-/tmp/ef_demo_stories}
M=models/stories260K/stories260K.bin
mkdir -p "$W"
: > "$W/stories.jsonl"
for s in $(seq 1 240); do
  "$EF" generate "$M" --temp 0.8 --seed "$s" -n 64 -t 1 2>/dev/null | python3 -c '
import json, sys
print(json.dumps({"instruction": "Tell a story.", "input": "", "output": sys.stdin.read().strip()}))' >> "$W/stories.jsonl"
done
"$EF" prune "$M" "$W/student2" --keep-layers 0,4
"$EF" distill --student "$W/student2" --teacher "$M" --data "$W/stories.jsonl" --out "$W/run" \
  --epochs 3 --batch 8 --seq-len 192 --rank 8 --scale 2 --lr 3e-3 --temperature 1 --alpha 1 \
  --warmup-ratio 0.05 --eval-every 9 --seed 1
