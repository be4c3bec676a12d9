"""Which queued pieces to answer now rather than at the next batch boundary.

The inference thread looks at its queue only between batches, and one batch of long texts
takes seconds. The daemon's ticker asks :meth:`hotswapd.pipeline.batching.Batcher.shed`
ten times a second; this module decides, walking the queue in order from when the next
batch can start, pricing each piece by what its version's batches cost:

- a piece that must not run (deadline passed, client gone, a sibling failed) goes with
  its reason;
- a piece of a request shed in this pass goes with it;
- a piece that would finish too close to its deadline goes with ``busy`` (a client that
  retries later is served; one left waiting would only time out), and adds nothing to
  the work ahead of the pieces after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hotswapd.errors import Busy

Coefficients = Callable[[tuple[str, str]], tuple[float, float]]  # a version's seconds per text, per byte
# A piece due to finish closer than this to its deadline is shed: the answer must travel
# too. At most a tenth of the piece's whole wait, or a 100 ms deadline would shed every
# piece a tick found queued, however fast the model.
SLACK_SECONDS = 0.1
SLACK_SHARE = 0.1


def doomed(pieces: Iterable[Any], now: float, start_at: float, coefficients: Coefficients | None) -> dict[int, BaseException]:
    """``id(piece)`` -> why, for the queued ``pieces`` (in queue order) to answer now; the
    next batch can start at ``start_at``."""
    at = start_at
    prices: dict[tuple[str, str], tuple[float, float]] = {}
    out: dict[int, BaseException] = {}
    failed: dict[int, BaseException] = {}  # requests (collectors) shed in this pass, and why
    for piece in pieces:
        why = piece.dropped(now)
        if why is None and piece.collector is not None:
            why = failed.get(id(piece.collector))
        deadline = piece.deadline.at if piece.deadline is not None else None
        if why is None and coefficients is not None and deadline is not None:
            key = (piece.loaded.model, piece.loaded.version)
            if key not in prices:
                prices[key] = coefficients(key)
            per_text, per_byte = prices[key]
            finish = at + per_text * len(piece.texts) + per_byte * piece.nbytes
            if finish > deadline - min(SLACK_SECONDS, SLACK_SHARE * (deadline - piece.enqueued)):
                why = Busy(
                    f"hotswapd is busy: this request would not be answered before its deadline ({max(0.0, deadline - now):.1f} s "
                    f"left, about {finish - now:.1f} s of work ahead of it and in it); retry later",
                    retry_after=min(5.0, max(0.05, at - now)),
                )
            else:
                at = finish
        if why is not None:
            out[id(piece)] = why
            if piece.collector is not None:
                failed.setdefault(id(piece.collector), why)
    return out
