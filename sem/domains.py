"""Source filters: which domains a search may return passages from (`allow`) and which it may not (`block`).

A passage's source is the host of its URL (the web backends use the URL as the passage id); a local corpus passage
without one is known by its id's prefix, up to the first `:` or `/` (`wiki:42` -> `wiki`). An entry matches its own
host and every subdomain (`example.org` matches `docs.example.org`). A passage passes when no `block` entry matches
it and, if there is an `allow` list, one of its entries does. Filters of the deployment and of the request both
apply (`DomainFilter.both`). Pure, no I/O.

>>> from sem.types import Passage
>>> f = DomainFilter.of(allow=["Example.org"], block=["bad.example.org"])
>>> [f.allows(Passage(id=u, text="")) for u in
...  ("https://docs.example.org/a", "https://bad.example.org/x", "https://other.net/", "wiki:1")]
[True, False, False, False]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sem.types import Passage

# A domain: dot-separated labels of letters, digits and inner hyphens (a single label names a local corpus' prefix).
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalize_domain(entry: str) -> str:
    """The entry in lower case; ValueError saying why for anything that is not a bare domain.

    >>> normalize_domain(" Docs.Example.ORG. ")
    'docs.example.org'
    >>> normalize_domain("https://example.org/path")
    Traceback (most recent call last):
    ...
    ValueError: 'https://example.org/path' is not a domain: give the bare host, e.g. 'example.org'
    """
    if not isinstance(entry, str):
        raise ValueError(f"{entry!r} is not a domain: expected a string such as 'example.org'")
    domain = entry.strip().lower().rstrip(".")
    if domain.startswith("*."):  # "*.example.org" means what "example.org" means here
        domain = domain[2:]
    if not domain or len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise ValueError(f"{entry!r} is not a domain: give the bare host, e.g. 'example.org'")
    return domain


def source_of(passage: Passage) -> str:
    """The host of the passage's URL, else its id's prefix (local corpora).

    >>> source_of(Passage(id="https://En.Wikipedia.org/wiki/Paris", text="")), source_of(Passage(id="wiki:7", text=""))
    ('en.wikipedia.org', 'wiki')
    """
    url = getattr(passage, "url", None) or passage.id
    if url.startswith(("http://", "https://")):
        return (urlsplit(url).hostname or "").rstrip(".")
    return re.split(r"[:/]", passage.id, maxsplit=1)[0].lower()


def _covers(entry: str, host: str) -> bool:
    return host == entry or host.endswith("." + entry)


@dataclass(frozen=True, slots=True)
class DomainFilter:
    """Allowed and blocked domains, normalised and sorted (hashable: part of the search cache's key)."""

    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[str] = (), block: Iterable[str] = ()) -> DomainFilter:
        allowed, blocked = ({normalize_domain(d) for d in entries} for entries in (allow, block))
        return cls(tuple(sorted(allowed)), tuple(sorted(blocked)))

    def __bool__(self) -> bool:
        return bool(self.allow or self.block)

    def allows(self, passage: Passage) -> bool:
        host = source_of(passage)
        if any(_covers(entry, host) for entry in self.block):
            return False
        return not self.allow or any(_covers(entry, host) for entry in self.allow)

    def apply(self, passages: list[Passage]) -> tuple[list[Passage], int]:
        """The passages that pass, and how many were dropped."""
        kept = [p for p in passages if self.allows(p)]
        return kept, len(passages) - len(kept)

    def both(self, other: DomainFilter | None) -> DomainFilter:
        """A filter a passage passes only when it passes both (a request narrows the deployment's, never widens it).

        Allow lists intersect by coverage (`example.org` and `docs.example.org` leave `docs.example.org`); when they
        share nothing, ValueError (nothing could pass).

        >>> DomainFilter.of(["example.org"], ["x.net"]).both(DomainFilter.of(["docs.example.org", "y.com"]))
        DomainFilter(allow=('docs.example.org',), block=('x.net',))
        """
        if not other:
            return self
        if not self:
            return other
        allow = self.allow or other.allow
        if self.allow and other.allow:
            allow = tuple(sorted({a for a in self.allow if any(_covers(b, a) for b in other.allow)}
                                 | {b for b in other.allow if any(_covers(a, b) for a in self.allow)}))  # fmt: skip
            if not allow:
                raise ValueError(f"none of {list(other.allow)} is within the allowed domains {list(self.allow)}")
        return DomainFilter(allow, tuple(sorted(set(self.block) | set(other.block))))

    def key(self) -> str:
        """A stable text for cache keys ('' without a filter)."""
        return f"allow={','.join(self.allow)};block={','.join(self.block)}" if self else ""
