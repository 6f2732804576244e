"""The training phase: TRL's configs with SEM's fields, the SFT warm-up, GRPO, its rollouts over `sem.loop` (HF or
vLLM), the rewards, and LoRA adapters (building, merging, publishing)."""
