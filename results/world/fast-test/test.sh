#!/usr/bin/env bash
# Session 28's rule on test, once (logged): the judged checkpoint of the run on the cheaper step, read fresh.
set -euo pipefail
ckpt=$1; L=results/world/adapter-labels/labels.jsonl; R=results/rules/world-decide.md; out=results/world/fast-test
echo "== eval-gate $(date)"
trainer eval-gate --split test --final --rule $R --labels $L --model $ckpt --read-fresh \
  --policies auto,either,confidence --out $out/fast-fresh \
  --title "Session 28: session 26's run on the cheaper step, read fresh, world test (once)"
echo "== done $(date)"
