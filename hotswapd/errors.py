"""The one error tree of hotswap.

Every error the daemon can answer with is a subclass of :class:`HotswapError` with a
stable wire ``code``. The daemon turns an exception into an error reply carrying that
code; the client looks the code up and raises the same class again, so a script catches
``UnknownModel`` whether the problem was found locally or in the daemon.

    HotswapError
    ├── ConfigError            config file unreadable or invalid
    ├── ProtocolError          malformed frames or header fields
    │   └── UnsupportedVersion wire version the peer does not speak
    ├── RequestError           a well-formed request the daemon refuses
    │   ├── UnknownOp
    │   ├── UnknownModel
    │   ├── UnknownVersion
    │   ├── EmptyRequest
    │   ├── InvalidText        non-UTF-8 bytes
    │   ├── TextTooLong
    │   ├── BatchTooLarge
    │   ├── IncompatibleVersions  a switch the embedding-space guard refuses
    │   ├── NothingToRollBack
    │   └── FleetRefused       a fleet change a member refused or did not confirm in time
    ├── ModelLoadError         a model's source or backend failed to load
    ├── InferenceError         the backend failed while encoding
    ├── DaemonError            the daemon cannot be reached or is unhealthy
    │   ├── DaemonNotRunning   no daemon serves the socket
    │   │   └── DaemonDied     the daemon died while a request waited for it
    │   ├── DaemonTimeout      a daemon is there but did not answer in time
    │   ├── ShuttingDown       the daemon is draining and takes no new work
    │   ├── Busy               the daemon's queue is full: back off and retry
    │   ├── DeadlineExceeded   the request's own deadline passed before it ran
    │   ├── Cancelled          its client withdrew the request (an HTTP client that left)
    │   ├── FleetUnavailable   this member cannot reach etcd: it serves, but changes no state
    │   └── DaemonAlreadyRunning
    └── InternalError          a bug: the daemon caught something unexpected
"""

from __future__ import annotations


class HotswapError(Exception):
    """Root of every error hotswap raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(HotswapError):
    code = "config_error"


class ProtocolError(HotswapError):
    code = "protocol_error"


class UnsupportedVersion(ProtocolError):
    code = "unsupported_version"


class RequestError(HotswapError):
    code = "bad_request"


class UnknownOp(RequestError):
    code = "unknown_op"


class UnknownModel(RequestError):
    code = "unknown_model"


class UnknownVersion(RequestError):
    code = "unknown_version"


class EmptyRequest(RequestError):
    code = "empty_request"


class _TextError(RequestError):
    """An error about one text of a request; ``index`` is its position in the request, so a
    client that split a larger input can name the text in the caller's terms."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InvalidText(_TextError):
    code = "invalid_text"


class TextTooLong(_TextError):
    code = "text_too_long"


class BatchTooLarge(RequestError):
    code = "batch_too_large"


class IncompatibleVersions(RequestError):
    code = "incompatible_versions"


class NothingToRollBack(RequestError):
    code = "nothing_to_roll_back"


class WrongTask(RequestError):
    """An encode sent to a rerank version, or a rerank to an embedding version."""

    code = "wrong_task"


class CorpusUnavailable(RequestError):
    """A search on a version with no usable corpus (none configured, missing, foreign)."""

    code = "corpus_unavailable"


class FleetRefused(RequestError):
    """A fleet change (switch, rollback, abort) that did not commit: a member refused it
    (its reason and name in the message), another change was in progress, or the members
    did not all report ready before the deadline. Nothing flipped anywhere."""

    code = "fleet_refused"


class ModelLoadError(HotswapError):
    code = "model_load_error"


class InferenceError(HotswapError):
    code = "inference_error"


class DaemonError(HotswapError):
    code = "daemon_error"


class DaemonNotRunning(DaemonError):
    code = "daemon_not_running"


class DaemonDied(DaemonNotRunning):
    code = "daemon_died"


class Busy(DaemonError):
    """Refused at admission: the daemon holds as much queued work as it is allowed to.
    ``retry_after`` (seconds) is the daemon's estimate of when room frees up."""

    code = "busy"

    def __init__(self, message: str, retry_after: float = 0.1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(DaemonError):
    code = "deadline_exceeded"


class Cancelled(DaemonError):
    code = "cancelled"


class FleetUnavailable(DaemonError):
    """This member cannot reach etcd: it keeps serving its last committed state and refuses
    changes made on it until it reconnects."""

    code = "fleet_unavailable"


class DaemonTimeout(DaemonError):
    code = "daemon_timeout"


class ShuttingDown(DaemonError):
    code = "shutting_down"


class DaemonAlreadyRunning(DaemonError):
    code = "daemon_already_running"


class InternalError(HotswapError):
    code = "internal_error"


def _all_subclasses(cls: type[HotswapError]) -> list[type[HotswapError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


ERRORS_BY_CODE: dict[str, type[HotswapError]] = {
    cls.code: cls for cls in [HotswapError, *_all_subclasses(HotswapError)]
}


def error_from_wire(code: str, message: str, retry_after: float | None = None, index: int | None = None) -> HotswapError:
    """Rebuild the exception a daemon reported; unknown codes become the root class."""
    if code == Busy.code:
        return Busy(message, retry_after if retry_after is not None else 0.1)
    cls = ERRORS_BY_CODE.get(code, HotswapError)
    if issubclass(cls, _TextError):
        return cls(message, index)
    return cls(message)
