"""Where the gateway's time goes: py-spy samples the service process (not vLLM's engine process) while sequential
`/v1/answer` requests (search never) run, then prints the share of samples per layer.

    .venv/bin/python bench/profile_gateway.py [--requests 30] [--out bench/results/gateway-profile.txt]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serving import ROOT, start_service

LAYERS = [  # the innermost frame of a sample that matches decides its layer
    ("tokenizer / chat template", ("tokenizers", "tokenization_utils", "jinja2", "apply_chat_template")),
    ("vLLM client: output processing, stats, IPC", ("vllm/",)),
    ("search loop (sem.loop, sem.protocol)", ("sem/loop.py", "sem/protocol.py")),
    ("HTTP, FastAPI, pydantic", ("uvicorn/protocols", "starlette", "fastapi", "pydantic", "h11", "httptools")),
    ("event loop itself (uvloop, in C)", ("asyncio/runners.py",)),
]
RATE = 200


def classify(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, needles in LAYERS:
            if any(n in frame for n in needles):
                return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway-profile.txt")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    proc, base = start_service({})
    raw = args.out.with_suffix(".collapsed")
    try:
        record = [pyspy, "record", "--pid", str(proc.pid), "--format", "raw", "--output", str(raw), "--rate", str(RATE),
                  "--nonblocking"]  # fmt: skip
        spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        for i in range(args.requests):
            httpx.post(f"{base}/v1/answer", json={"question": f"Tell me about the river number {i}", "search": "never",
                                                  "max_tokens": 64}, timeout=120).raise_for_status()  # fmt: skip
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        _, err = spy.communicate(timeout=60)
        if not raw.is_file():
            raise RuntimeError(f"py-spy wrote nothing: {err.strip()[-500:]}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    shares: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            shares[classify(stack)] += int(count)
    total = sum(shares.values()) or 1
    # py-spy drops idle samples: what is left is the CPU the gateway process itself used.
    per_request_ms = 1000 * total / RATE / args.requests
    lines = [f"gateway process CPU: {per_request_ms:.1f} ms per request ({total} busy samples at {RATE} Hz)", "",
             "| layer | share of busy samples | ms per request |", "|---|---|---|"]  # fmt: skip
    lines += [
        f"| {name} | {100 * n / total:.1f}% | {per_request_ms * n / total:.1f} |" for name, n in shares.most_common()
    ]
    table = "\n".join(lines)
    print(table)
    args.out.write_text(table + "\n")
    print(f"-> {args.out} (stacks: {raw})")


if __name__ == "__main__":
    main()
