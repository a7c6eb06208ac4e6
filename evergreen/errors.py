"""Which failures are worth retrying, and how the command line words a failure.

A transient failure is one that may go away by itself: the network or a remote store
(object storage, an MLflow or HTTP server) not answering, timing out, or answering 5xx /
429. Everything else is deterministic: a missing or unreadable input, a bad config, data
that breaks a rule, a logic error; running it again fails the same way, so it is not
retried and the person has to act. Nothing here imports a library: errors of MLflow,
requests, httpx, botocore, gcsfs are recognised by what they carry (a status code) or by
their class names.
"""

from __future__ import annotations

from evergreen.config import ConfigError

# OSErrors that name a path the user has to fix, not a store that is briefly away.
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
# Transport errors of HTTP and cloud clients that are not OSErrors, by class name (any class
# in the exception's MRO): httpx, botocore, urllib3, SQLAlchemy (a locked or lost database).
_TRANSIENT_NAMES = frozenset(
    {
        "TransportError",  # httpx: connect/read/write errors, timeouts, protocol errors
        "EndpointConnectionError",  # botocore
        "ConnectionClosedError",  # botocore
        "ReadTimeoutError",  # botocore, urllib3
        "ConnectTimeoutError",  # botocore, urllib3
        "ProtocolError",  # urllib3
        "OperationalError",  # SQLAlchemy / sqlite3: database locked, connection lost
    }
)
_RETRY_STATUS = frozenset({408, 425, 429})


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error carries, if any (MLflow, requests, httpx, botocore, gcsfs)."""
    get = getattr(exc, "get_http_status_code", None)  # MlflowException
    if callable(get):
        try:
            return int(get())
        except (TypeError, ValueError):
            return None
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)  # requests, httpx
    if code is None and isinstance(response, dict):  # botocore ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code is None:
        code = getattr(exc, "code", None)  # gcsfs HttpError
    return code if isinstance(code, int) and 100 <= code < 600 else None


def is_transient(exc: BaseException) -> bool:
    """True when trying again may succeed: connection refused/reset, timeouts, other OS
    errors of a remote store, HTTP 5xx / 408 / 429 from MLflow or an object store.
    False for missing or unreadable inputs, bad configs, data errors and logic errors."""
    status = http_status(exc)
    if status is not None:
        return status >= 500 or status in _RETRY_STATUS
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, _PATH_ERRORS):
        return False
    if isinstance(exc, OSError):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


def is_usage_error(exc: BaseException) -> bool:
    """A config that cannot be used (the command line exits 2 for these, 1 for a failed run)."""
    return isinstance(exc, ConfigError)


def one_line(message: str) -> str:
    """A possibly multi-line message as one line ("a:\\n  b\\n  c" -> "a: b; c")."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return ""
    head, rest = lines[0], lines[1:]
    if not rest:
        return head
    return f"{head} {'; '.join(rest)}" if head.endswith(":") else "; ".join(lines)


def describe(exc: BaseException) -> str:
    """The error as the command line prints it: its message, prefixed with its type when it is
    not one of the kinds whose message says what to do (a bare KeyError('x') says little)."""
    text = one_line(str(exc))
    # Evergreen's own errors and plain RuntimeErrors carry a sentence; ValueErrors and
    # OSErrors name the value or path.
    known = isinstance(exc, (ValueError, OSError)) or type(exc) is RuntimeError or type(exc).__module__.startswith("evergreen")
    if not text:
        return type(exc).__name__
    return text if known else f"{type(exc).__name__}: {text}"
