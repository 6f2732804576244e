"""Caps from settings that a request must respect; a breach is a 422 naming the field, like schema errors."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from sem.settings import Limits


def check_limits(
    limits: Limits,
    *,
    question: str,
    max_searches: int | None = None,
    top_k: int | None = None,
    max_tokens: int | None = None,
    fields: dict[str, tuple[str | int, ...]] | None = None,
) -> None:
    """Raise RequestValidationError for every value over its cap. `fields` maps a name to its location."""
    where = {
        "question": ("body", "question"),
        "max_searches": ("body", "max_searches"),
        "top_k": ("body", "top_k"),
        "max_tokens": ("body", "max_tokens"),
        **(fields or {}),
    }
    caps = {
        "question": (len(question), limits.max_question_chars, "characters"),
        "max_searches": (max_searches, limits.max_searches, ""),
        "top_k": (top_k, limits.max_top_k, ""),
        "max_tokens": (max_tokens, limits.max_tokens, ""),
    }
    errors = []
    for name, (value, cap, unit) in caps.items():
        if value is not None and value > cap:
            what = f"at most {cap} {unit}".strip()
            errors.append({"loc": where[name], "msg": f"must be {what} (got {value})", "type": "less_than_equal"})
    if not question.strip():
        errors.append({"loc": where["question"], "msg": "must not be blank", "type": "string_too_short"})
    if errors:
        raise RequestValidationError(errors)
