#!/usr/bin/env bash
# Session 28's rule on dev (results/rules/world-decide.md, "session 28"): the judged checkpoint of the run on the
# cheaper step, calibrated as session 26's, read fresh (auto, either at the cut, confidence), and the conditions.
set -euo pipefail
ckpt=$1; L=results/world/adapter-labels/labels.jsonl; out=runs/s28/dev
mkdir -p $out
python -c "from sem.gate import update_gate; print(update_gate('$ckpt', read_fresh=True))"
{ echo "== calibrate confidence $(date)"
  trainer calibrate --labels $L --model $ckpt --max-searches-per-question 0.62 --no-serve
  echo "== calibrate decision cut $(date)"
  trainer calibrate --labels $L --model $ckpt --decision --max-searches-per-question 0.75
} 2>&1 | grep -vE "^(INFO|WARNING|\[W|Loading|Processed|Adding|Rendering)" | tee runs/s28/calibration.txt
echo "== eval-gate $(date)"
trainer eval-gate --split dev --labels $L --model $ckpt --read-fresh --policies auto,either,confidence \
  --out $out/fast-fresh --title "Session 28: session 26's run on the cheaper step, read fresh, world dev"
for p in auto either; do
  python results/world/fresh-dev/conditions.py $out/fast-fresh $p results/world/fresh-dev/adapter-fresh
done
echo "== done $(date)"
