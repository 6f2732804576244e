"""The `confidence` gate's threshold, calibrated per model (`trainer calibrate`) and kept beside its weights.

A calibration is a small JSON file in the model's folder, so the service that loads the model reads the threshold
that was chosen for it; an explicit `SEM_LOOP__CONFIDENCE_THRESHOLD` wins over it, and 0.5 is the fallback. The file
also names the model's default policy (`policy`): a calibrated model that was never trained on SEM's template is
served with its confidence gate unless `SEM_LOOP__POLICY` or the request says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GATE_FILE = "sem_gate.json"
DEFAULT_THRESHOLD = 0.5
TRAINED_FIELDS = ("confidence_note",)  # how the model was trained to be served, not what a calibration chose
KEPT_FIELDS = (*TRAINED_FIELDS, "decision_threshold", "read_fresh")  # what recalibrating `confidence` leaves as it was


def gate_path(model_path: str | Path) -> Path:
    return Path(model_path) / GATE_FILE


def read_gate(model_path: str | Path) -> dict[str, Any]:
    """The calibration stored with a local model, or {} (a hub id, or never calibrated)."""
    path = gate_path(model_path)
    return json.loads(path.read_text()) if path.is_file() else {}


def read_threshold(model_path: str | Path) -> float | None:
    """The calibrated threshold stored with a local model, or None (a hub id, or never calibrated)."""
    threshold = read_gate(model_path).get("confidence_threshold")
    return None if threshold is None else float(threshold)


def resolve_policy(configured: str | None, model_path: str | Path) -> str:
    """The policy of a request that names none: configured, else the model's own (its gate file), else auto.

    >>> resolve_policy("never", "/nonexistent"), resolve_policy(None, "/nonexistent")
    ('never', 'auto')
    """
    return configured or read_gate(model_path).get("policy") or "auto"


def write_threshold(model_path: str | Path, threshold: float, **details: Any) -> Path:
    """Store a calibration beside the model's weights; `details` says how it was chosen (split, metric, counts)."""
    path = gate_path(model_path)
    staged = path.with_name(path.name + ".tmp")
    trained = {k: v for k, v in read_gate(model_path).items() if k in KEPT_FIELDS}  # a recalibration keeps them
    staged.write_text(json.dumps({"confidence_threshold": threshold, **details, **trained}, indent=2) + "\n")
    staged.replace(path)  # replaces a link too: a folder of links to another model's files never writes into it
    return path


def update_gate(model_path: str | Path, **fields: Any) -> Path:
    """Add fields to a model's gate file (written if it has none), e.g. how its `auto` decision was trained."""
    path = gate_path(model_path)
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(json.dumps({**read_gate(model_path), **fields}, indent=2) + "\n")
    staged.replace(path)
    return path


def resolve_threshold(configured: float | None, model_path: str | Path) -> float:
    """The threshold the service uses: configured, else calibrated for the model, else the default.

    >>> resolve_threshold(0.3, "/nonexistent")
    0.3
    >>> resolve_threshold(None, "/nonexistent")
    0.5
    """
    if configured is not None:
        return configured
    calibrated = read_threshold(model_path)
    return DEFAULT_THRESHOLD if calibrated is None else calibrated


def resolve_confidence_note(configured: bool | None, model_path: str | Path) -> bool:
    """Whether `auto` writes the first answer's confidence before the decision: configured, else as the model was
    trained (`trainer decide --note` stores it in the gate file), else off.

    >>> resolve_confidence_note(None, "/nonexistent"), resolve_confidence_note(True, "/nonexistent")
    (False, True)
    """
    if configured is not None:
        return configured
    return bool(read_gate(model_path).get("confidence_note", False))


def resolve_read_fresh(configured: bool | None, model_path: str | Path) -> bool:
    """Whether the answer after a search is read without the first answer (`LoopOptions.read_fresh`): configured,
    else stored with the model (`read_fresh` in its gate file), else off.

    >>> resolve_read_fresh(None, "/nonexistent"), resolve_read_fresh(True, "/nonexistent")
    (False, True)
    """
    if configured is not None:
        return configured
    return bool(read_gate(model_path).get("read_fresh", False))


def resolve_decision_threshold(configured: float | None, model_path: str | Path) -> float | None:
    """The cut on `auto`'s P(search) after the note: configured, else the one calibrated for the model
    (`decision_threshold` in its gate file), else None (the sampled decision token decides).

    >>> resolve_decision_threshold(None, "/nonexistent") is None, resolve_decision_threshold(0.8, "/nonexistent")
    (True, 0.8)
    """
    if configured is not None:
        return configured
    stored = read_gate(model_path).get("decision_threshold")
    return None if stored is None else float(stored)
