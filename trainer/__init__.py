"""SEM post-training with GRPO (TRL). The trainer's rollouts run `sem.loop`, the same code the service runs.

The data, rewards, rollout and `trainer` CLI are the Trainer issue's work; this package reserves the name.
"""
