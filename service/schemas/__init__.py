"""Wire models of the HTTP API (pydantic only; domain types live in `sem`)."""

from service.schemas.answer import AnswerRequest, AnswerResponse, PassageOut, SearchOut, TraceOut, Usage
from service.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ModelCard,
    ModelList,
)
from service.schemas.common import ErrorInfo, ErrorResponse, Health, Stats

__all__ = [
    "AnswerRequest",
    "AnswerResponse",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "ErrorInfo",
    "ErrorResponse",
    "Health",
    "ModelCard",
    "ModelList",
    "PassageOut",
    "SearchOut",
    "Stats",
    "TraceOut",
    "Usage",
]
