"""Service logs: one JSON object a line (python-json-logger) or plain text, each with the request id.

Questions and answers are not logged at INFO: a line says what happened (route, status, searches, latency),
not what was asked.
"""

from __future__ import annotations

import logging

from service.middleware import request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of the message
        return True


def configure(level: str, fmt: str) -> None:
    """Root logging for the service process (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        fields = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"
        renamed = {"levelname": "level", "asctime": "time", "name": "logger"}
        handler.setFormatter(JsonFormatter(fields, rename_fields=renamed))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
