"""The exceptions of gilkit_embed.

Bad input raises the built-in ``ValueError`` / ``TypeError`` before any request is sent. Everything
that goes wrong after that is an :class:`EmbeddingError`, shaped like the official ``openai``
client's exceptions so handlers read the same:

* :class:`APIStatusError` (the API answered with an error status; ``status_code``, ``message``,
  ``request_id``, ``type``, ``code``), with :class:`RateLimitError` for 429;
* :class:`APIConnectionError` (could not connect, or the body broke off), with
  :class:`APITimeoutError` for timeouts;
* :class:`APIResponseValidationError` (a 2xx whose body is not an embeddings response);
* :class:`CircuitOpenError` (the circuit breaker refused the call: the endpoint kept failing);
* :class:`ServiceOverloadedError` (a local model's queue is full);
* :class:`ModelError` (an in-process model raised or returned something unusable).

Every exception carries ``attempts``: how many HTTP attempts were made (0 when none was).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "EmbeddingError",
    "APIStatusError",
    "RateLimitError",
    "APIConnectionError",
    "APITimeoutError",
    "APIResponseValidationError",
    "CircuitOpenError",
    "ServiceOverloadedError",
    "ModelError",
]


class EmbeddingError(Exception):
    """Base class of every failure after input validation."""

    message: str
    status_code: Optional[int]
    request_id: Optional[str]
    attempts: int

    def __init__(
        self,
        message: str,
        *,
        status_code: Optional[int] = None,
        request_id: Optional[str] = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.attempts = attempts


class APIStatusError(EmbeddingError):
    """The API answered with a non-2xx status (after retries, when it is retryable)."""

    status_code: int
    type: Optional[str]
    code: Optional[str]
    api_message: str

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        api_message: str,
        request_id: Optional[str] = None,
        type: Optional[str] = None,
        code: Optional[str] = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id, attempts=attempts)
        self.api_message = api_message
        self.type = type
        self.code = code


class RateLimitError(APIStatusError):
    """HTTP 429 after all retries."""


class APIConnectionError(EmbeddingError):
    """The request could not be completed: connection refused or reset, or a truncated body."""


class APITimeoutError(APIConnectionError):
    """The request (or, in ``embed_batch_parallel``, the batch) did not finish in time."""


class APIResponseValidationError(EmbeddingError):
    """A 2xx response whose body is not a valid embeddings response (not retried)."""


class CircuitOpenError(EmbeddingError):
    """The circuit breaker is open after repeated failures; the request was not sent."""

    retry_in: float

    def __init__(self, message: str, *, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class ServiceOverloadedError(EmbeddingError):
    """A local model's queue is full; retry after ``retry_after`` seconds."""

    retry_after: float

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelError(EmbeddingError):
    """An in-process embedding model raised, or returned something that is not one vector per text."""
