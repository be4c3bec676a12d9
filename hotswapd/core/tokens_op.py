"""The tokens op: how many tokens each text is for a version, counted by that version's own
tokenizer after its prompt and preprocessing (what `usage` reports), without running the
model. `hs tokens`, ``Client.count_tokens`` and TEI's ``POST /tokenize`` ask it.

The version is picked as an encode's is (pinned, else the routing's pick for the key), and
loaded if need be; the count runs on the tokens pool, never on the inference thread.
"""

from __future__ import annotations

from typing import Any

from hotswapd.core.encode_op import EncodeOp
from hotswapd.core.op_types import Deferred, Outcome, Reply, option
from hotswapd.core.seams import OpSpec
from hotswapd.errors import HotswapError, InternalError, RequestError
from hotswapd.text.pairs import split_pair
from hotswapd.wire.protocol import Request

MAX_DETAILED_TEXTS = 256  # TEI's /tokenize lists tokens; so many texts, this many bytes at most
MAX_DETAILED_BYTES = 256 * 1024


class TokensOp:
    def __init__(self, services: Any) -> None:
        self._s = services
        self._registry = services.registry
        self._texts = EncodeOp(services).decode_texts  # the encode op's checks: count, size, UTF-8, not empty

    def prepare(self, request: Request) -> Deferred:
        snap = self._registry.published.current
        name, model, pinned = self._registry.resolve(request.model, snap)
        texts = self._texts(request.payload, snap.config.daemon)
        version = pinned or self._s.switchboard.pick(name, option(request, "key", str), snap)
        prompt = option(request, "prompt", str)
        details = bool(option(request, "details", bool, False))
        size = sum(len(frame) for frame in request.payload)
        if details and (len(texts) > MAX_DETAILED_TEXTS or size > MAX_DETAILED_BYTES):
            # A token's details take ~60 bytes of reply each: bounded before any is built.
            raise RequestError(f"token details are listed for at most {MAX_DETAILED_TEXTS} texts and {MAX_DETAILED_BYTES // 1024} KiB at a time; "
                               f"this asks {len(texts)} texts, {size // 1024} KiB (counts alone have no such bound)")
        ticket = self._s.admission.admit(len(texts), size, None, key=(name, version))  # counted as queued work, as an encode is
        return Deferred(lambda reply: self._s.workers.submit("loader", lambda: self._lease(name, version, texts, prompt, details, reply, ticket.release)))

    def _lease(self, name: str, version: str, texts: list[str], prompt: str | None, details: bool, reply: Reply, release: Any) -> None:
        """On the loader pool (the version may have to load); the count itself on the tokens pool."""
        try:
            loaded = self._registry.lease(name, version)
        except Exception as exc:  # noqa: BLE001 -- a failed load is this request's answer
            release()
            reply(exc if isinstance(exc, HotswapError) else InternalError(f"{type(exc).__name__}: {exc}"))
            return
        self._s.workers.submit("tokens", lambda: self._count(loaded, name, version, texts, prompt, details, reply, release))

    def _count(self, loaded: Any, name: str, version: str, texts: list[str], prompt: str | None, details: bool, reply: Reply, release: Any) -> None:
        answer: Outcome | HotswapError
        try:
            counter = loaded.caps.count_tokens
            if counter is None:
                raise RequestError(f"{name}@{version} cannot count tokens (its backend has no tokenizer here)")
            prepared = loaded.text.prepare(texts, prompt, self._registry.config.daemon.max_text_bytes)
            if loaded.config.task == "rerank":  # a plain text is a query alone to a cross-encoder
                prepared = [split_pair(text)[0] for text in prepared]
            counts = [int(count) for count in counter(prepared)]
            result: dict[str, Any] = {"model": name, "version": version, "fingerprint": loaded.fingerprint, "tokens": counts, "total": sum(counts),
                                      "max_tokens": loaded.caps.max_tokens}
            if details:
                if loaded.caps.token_details is None:
                    raise RequestError(f"{name}@{version} cannot list its tokens (count them without details)")
                result["details"] = loaded.caps.token_details(prepared)
            answer = Outcome(result)
        except HotswapError as exc:
            answer = exc
        except Exception as exc:  # noqa: BLE001 -- the request still gets its one reply
            answer = InternalError(f"{type(exc).__name__}: {exc}")
        finally:
            self._registry.release(loaded)
            release()
        reply(answer)


TOKENS_OP = OpSpec("tokens", frozenset({"key", "prompt", "details", "deadline_ms", "traceparent"}), lambda services: TokensOp(services).prepare)
