"""Evaluation material, kept out of the serving core: the benchmark loaders (`benchmarks`), the licensed sample of
their rows that ships in the package (`data/benchmarks`, `sample`). The trainer, the benchmarks in bench/ and the
tests read it; the service never imports it (tests/unit/test_layout.py checks)."""
