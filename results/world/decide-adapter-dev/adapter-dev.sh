#!/usr/bin/env bash
# Session 27: the checkpoint cut to an adapter, given how it was trained, calibrated and judged on dev (read fresh).
set -euo pipefail
L=results/world/adapter-labels/labels.jsonl; A=runs/s27/decide-adapter; out=runs/s27/dev
python -c "from sem.gate import update_gate; print(update_gate('$A', confidence_note=True, read_fresh=True))"
{ echo "== calibrate confidence $(date)"
  trainer calibrate --labels $L --model $A --max-searches-per-question 0.62 --no-serve
  echo "== calibrate decision cut $(date)"
  trainer calibrate --labels $L --model $A --decision --max-searches-per-question 0.75
} 2>&1 | grep -vE "^(INFO|WARNING|\[W|Loading|Processed|Adding|Rendering)" | tee runs/s27/adapter-calibration.txt
echo "== eval-gate $(date)"
trainer eval-gate --split dev --labels $L --model $A --policies auto,either,confidence --out $out/decide-adapter \
  --title "Session 27: checkpoint 40 cut to an adapter, read fresh, world dev"
for p in auto either; do python results/world/fresh-dev/conditions.py $out/decide-adapter $p results/world/fresh-dev/adapter-fresh; done
echo "== done $(date)"
