#!/usr/bin/env bash
set -euo pipefail
L=results/world/adapter-labels/labels.jsonl; A=runs/s27/decide-svd; out=runs/s27/dev
echo "== calibrate decision cut $(date)"
trainer calibrate --labels $L --model $A --decision --max-searches-per-question 0.74 2>&1 \
  | grep -vE "^(INFO|WARNING|\[W|Loading|Processed|Adding|Rendering)" | tee runs/s27/margin-calibration.txt
echo "== eval-gate $(date)"
trainer eval-gate --split dev --labels $L --model $A --policies auto,either,confidence --out $out/decide-margin \
  --title "Session 27: the SVD adapter, cut within 0.74, read fresh, world dev"
for p in auto either; do python results/world/fresh-dev/conditions.py $out/decide-margin $p results/world/fresh-dev/adapter-fresh; done
echo "== done $(date)"
