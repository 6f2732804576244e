#!/usr/bin/env bash
# Session 27's rule on dev: checkpoint 40 with read_fresh (auto, either, confidence), the adapter's confidence with
# read_fresh, and the three conditions.
set -euo pipefail
L=results/world/adapter-labels/labels.jsonl; out=runs/s27/dev
mkdir -p $out
echo "== eval-gate checkpoint 40 $(date)"
trainer eval-gate --split dev --labels $L --model runs/decide-focus40/checkpoint-40 --read-fresh \
  --policies auto,either,confidence --out $out/focus40-fresh --title "Session 27: checkpoint 40 with read_fresh, world dev"
echo "== eval-gate adapter $(date)"
trainer eval-gate --split dev --labels $L --model sem/adapters/sem-world-135m --read-fresh \
  --policies confidence --out $out/adapter-fresh --title "Session 27: the adapter's confidence with read_fresh, world dev"
for p in auto either; do
  python results/world/fresh-dev/conditions.py $out/focus40-fresh $p $out/adapter-fresh
  python results/world/fresh-dev/conditions.py $out/focus40-fresh $p results/world/focus-dev/adapter
done
python results/world/fresh-dev/conditions.py $out/adapter-fresh confidence results/world/focus-dev/adapter
echo "== done $(date)"
