"""`sem-client ask "question"`."""

from __future__ import annotations

import argparse
import sys

from sem_client import SemClient, SemError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sem-client", description="Ask a SEM service.")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="Ask one question; prints the answer and the searches it took.")
    ask.add_argument("question")
    ask.add_argument("--search", choices=["auto", "never", "always", "confidence", "either"], default=None)
    ask.add_argument("--max-searches", type=int, default=None)
    ask.add_argument("--base-url", default=None, help="default: SEM_BASE_URL or http://127.0.0.1:8000")
    ask.add_argument("--json", action="store_true", help="print the whole response as JSON")
    args = parser.parse_args(argv)
    try:
        with SemClient(args.base_url) as client:
            result = client.answer(args.question, search=args.search, max_searches=args.max_searches)
    except SemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(result.answer)
    print(f"-- {result.search_count} search(es), {result.latency_ms:.0f} ms")
    for search in result.searches:
        titles = ", ".join(p.title or p.id for p in search.passages) or "no results"
        print(f"   {search.query!r}: {titles}{' (cached)' if search.cached else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
