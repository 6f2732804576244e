"""API keys: what settings and Redis hold is a key's sha256, never the key."""

from __future__ import annotations

import hashlib
import secrets

REDIS_SET = "sem:api-keys"


def hash_key(key: str) -> str:
    """The digest that settings and Redis hold for a key.

    >>> hash_key("sk-test")[:12]
    'f3abf2a6cc4f'
    """
    return hashlib.sha256(key.encode()).hexdigest()


def principal_of(digest: str) -> str:
    """Who a key's requests count against (rate limits, search budgets): a prefix of its digest, never the key.

    >>> principal_of(hash_key("sk-test"))
    'key:f3abf2a6cc4f0098'
    """
    return f"key:{digest[:16]}"


def new_key() -> str:
    return "sk-sem-" + secrets.token_urlsafe(32)
