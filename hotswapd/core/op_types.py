"""How an op answers (at once, queued on a pool, or deferred to a callback), and how its
options are read: shared by the handlers and the encode op."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hotswapd.core.workers import Pool
from hotswapd.errors import HotswapError, ProtocolError
from hotswapd.wire.protocol import Request


@dataclass
class Outcome:
    result: dict[str, Any]
    payload: list[Any] = field(default_factory=list)


Job = Callable[[], Outcome]
Reply = Callable[["Outcome | HotswapError"], None]


@dataclass
class Queued:
    """A job for a worker pool; its Outcome (or error) is the reply."""

    pool: Pool
    job: Job


@dataclass
class Deferred:
    """Work started on the socket thread that answers later: ``start(reply)`` must not
    block, and ``reply`` is called exactly once, from any thread. ``withdraw(error)``, when
    the op has it, drops the work not yet run, which then answers ``error``: its client sent
    ``cancel`` (it left), or the daemon's drain ended first."""

    start: Callable[[Reply], None]
    withdraw: Callable[[HotswapError], None] | None = None


def option(request: Request, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """An option of ``request``, type-checked; absent or null: ``default``."""
    value = request.options.get(name)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; on the wire `true` is never a number.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(f"option {name!r} of op {request.op!r} must be {' or '.join(k.__name__ for k in kinds)}")
    return value
