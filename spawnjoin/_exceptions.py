"""The spawnjoin exception hierarchy.

::

    SpawnJoinError
    ├── ConfigError                 a bad option, model directory or dialect name
    ├── BackendError                anything a backend could not do (status, request_id, retryable)
    │   ├── ConnectError            the endpoint is unreachable
    │   ├── Timeout                 a request or stream took too long
    │   ├── RateLimited             HTTP 429 (retry_after seconds, when the server says)
    │   ├── ServerError             HTTP 5xx, or a malformed response / stream
    │   ├── ModelNotFound           the endpoint does not serve the requested model
    │   └── ContextWindowExceeded   the prompt leaves no room to generate in the context window
    ├── DialectError                a dialect was used wrongly (never raised for bad model output)
    └── BudgetExceeded              a solve-level budget stopped the run (deadline, total tokens)

Model output that breaks a dialect's syntax is never an exception: the thread ends with a recorded reason.
"""

from __future__ import annotations

__all__ = [
    "SpawnJoinError",
    "ConfigError",
    "BackendError",
    "ConnectError",
    "Timeout",
    "RateLimited",
    "ServerError",
    "ModelNotFound",
    "ContextWindowExceeded",
    "DialectError",
    "BudgetExceeded",
]


class SpawnJoinError(Exception):
    """Base class of every error spawnjoin raises."""


class ConfigError(SpawnJoinError):
    """An option, path or name given to spawnjoin is wrong; the message says what to change."""


class BackendError(SpawnJoinError):
    """A backend could not complete a request.

    Args:
        message: What went wrong and what to do about it.
        status: HTTP status code, when there was one.
        request_id: The server's or spawnjoin's id of the failed request.
        retryable: Whether retrying the same request may succeed.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        if retryable is not None:
            self.retryable = retryable


class ConnectError(BackendError):
    """The endpoint could not be reached (check the URL and that the server runs)."""

    retryable = True


class Timeout(BackendError):
    """A request or a stream exceeded its time limit."""

    retryable = True


class RateLimited(BackendError):
    """The server answered 429; `retry_after` holds its Retry-After in seconds, if any."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(BackendError):
    """The server failed (5xx) or sent a response spawnjoin cannot read."""

    retryable = True


class ModelNotFound(BackendError):
    """The endpoint does not serve the model asked for (list its models with GET /v1/models)."""


class ContextWindowExceeded(BackendError):
    """The prompt alone fills the context window; raise the window or shorten the prompt."""


class DialectError(SpawnJoinError):
    """A dialect was configured or called wrongly (never raised for malformed model output)."""


class BudgetExceeded(SpawnJoinError):
    """A solve-level budget (deadline, total tokens) ended the run; the partial result is attached."""

    def __init__(self, message: str, *, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result
