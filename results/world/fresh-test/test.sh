#!/usr/bin/env bash
# Session 27's rule on test, once each (logged): checkpoint 40 with read_fresh, the adapter's confidence with read_fresh.
set -euo pipefail
L=results/world/adapter-labels/labels.jsonl; R=results/rules/world-decide.md; out=results/world/fresh-test
echo "== eval-gate checkpoint 40 $(date)"
trainer eval-gate --split test --final --rule $R --labels $L --model runs/decide-focus40/checkpoint-40 --read-fresh \
  --policies auto,either,confidence --out $out/focus40-fresh \
  --title "Session 27: checkpoint 40 with read_fresh, world test (once)"
echo "== eval-gate adapter $(date)"
trainer eval-gate --split test --final --rule $R --labels $L --model sem/adapters/sem-world-135m --read-fresh \
  --policies confidence --out $out/adapter-fresh \
  --title "Session 27: the adapter's confidence with read_fresh, world test (once)"
echo "== done $(date)"
