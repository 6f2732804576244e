"""SEM post-training with GRPO (TRL). The trainer's rollouts run `sem.loop`, the same code the service runs.

By phase: `data` (the question mixes), `train/` (configs, SFT, GRPO, rollouts, rewards, adapters), `evals/` (labels,
runs, measures, reports); `commands/` and `cli` are the `trainer` CLI, `runtime` what its commands build alike.
"""
