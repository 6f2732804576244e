#!/usr/bin/env bash
set -euo pipefail
L=results/world/adapter-labels/labels.jsonl; A=runs/s27/decide-svd; out=runs/s27/dev
echo "== extract $(date)"
trainer extract --model runs/decide-focus40/checkpoint-40 --out $A --start base
cp runs/world/world/passages.jsonl $A/corpus.jsonl; cp runs/world/world/examples.json $A/examples.json
python -c "from sem.gate import update_gate; print(update_gate('$A', confidence_note=True, read_fresh=True))"
{ echo "== calibrate confidence $(date)"
  trainer calibrate --labels $L --model $A --max-searches-per-question 0.62 --no-serve
  echo "== calibrate decision cut $(date)"
  trainer calibrate --labels $L --model $A --decision --max-searches-per-question 0.75
} 2>&1 | grep -vE "^(INFO|WARNING|\[W|Loading|Processed|Adding|Rendering)" | tee runs/s27/svd-calibration.txt
echo "== eval-gate $(date)"
trainer eval-gate --split dev --labels $L --model $A --policies auto,either,confidence --out $out/decide-svd \
  --title "Session 27: checkpoint 40 cut to an adapter by SVD alone, read fresh, world dev"
for p in auto either; do python results/world/fresh-dev/conditions.py $out/decide-svd $p results/world/fresh-dev/adapter-fresh; done
echo "== done $(date)"
