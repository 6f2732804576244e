"""The `trainer` CLI's commands, one module per phase; `trainer.cli` registers them."""
