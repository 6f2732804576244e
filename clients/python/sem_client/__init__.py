"""Python SDK for the SEM service."""

from sem_client._client import AsyncSemClient, SemClient
from sem_client._streaming import AsyncStream, Stream
from sem_client._version import __version__ as __version__
from sem_client.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    SemError,
    ServiceUnavailableError,
    StreamError,
    UnprocessableEntityError,
)
from sem_client.types import Answer, ChatCompletion, ChatCompletionChunk, Citation, Passage, Search, Usage

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Answer",
    "AsyncSemClient",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Citation",
    "InternalServerError",
    "NotFoundError",
    "Passage",
    "RateLimitError",
    "Search",
    "SemClient",
    "SemError",
    "ServiceUnavailableError",
    "Stream",
    "StreamError",
    "UnprocessableEntityError",
    "Usage",
]
