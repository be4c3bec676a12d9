"""An ensemble's vectors: each member's own embedder on the same texts, combined.

It runs on the inference thread like any batch (one batch at a time, so a member's model is
never used by two batches at once). Members are leased from the registry for as long as the
ensemble is loaded: the memory budget counts them as the loaded versions they are. Evicting
a member of an idle ensemble unloads the ensemble with it (hotswapd.ensemble.assemble.in_use);
a busy or pinned ensemble keeps its members.

Each member sees a text as it would alone, with its own preprocessing and its own prompt
(`--prompt query` is "query: " for e5 and a sentence for BGE). The request's texts are
prepared for every member off the inference thread (:class:`EnsembleText`) and travel to the
batch as one string each, which is also what the embedding cache keys on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotswapd.errors import HotswapError, ModelLoadError, RequestError
from hotswapd.text.prompts import TextPrep

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.pipeline.loaded import LoadedVersion

# Starts a text prepared for the members: SAME and the one text every member sees, or
# EACH, the members' texts' lengths in characters, ":" and the texts one after another
# (no escaping: a text grows by its prompts only). Texts that reach the embedder without
# a mark (warm-up, agreement probes) are prepared here, without a prompt.
SAME, EACH = "\x1e=", "\x1e#"


@dataclass(frozen=True)
class Part:
    loaded: LoadedVersion
    weight: float

    @property
    def spec(self) -> str:
        return f"{self.loaded.model}@{self.loaded.version}"


@dataclass(frozen=True)
class EnsembleText(TextPrep):
    """Prepares a request's texts once per member, with each member's prompt of the name asked."""

    parts: tuple[Part, ...] = ()

    def changes(self, requested: str | None) -> bool:
        return True  # every text is prepared: the embedder tells prepared texts by their mark

    def prefix(self, requested: str | None) -> str:
        for part in self.parts:
            self._member_prefix(part, requested)  # a prompt one member lacks fails the request
        return ""

    def prepare(self, texts: list[str], requested: str | None, max_bytes: int | None = None) -> list[str]:
        columns = []
        for part in self.parts:
            self._member_prefix(part, requested)
            column = part.loaded.text.prepare(texts, requested, max_bytes)
            if part.loaded.config.long_text == "error":  # refused per request here, never inside a shared batch
                _refuse_long(part, column)
            columns.append(column)
        return [_pack([column[row] for column in columns]) for row in range(len(texts))]

    @staticmethod
    def _member_prefix(part: Part, requested: str | None) -> str:
        try:
            return part.loaded.text.prefix(requested)
        except RequestError as exc:
            raise RequestError(f"ensemble member {part.spec}: {exc.message}") from None


class EnsembleEmbedder:
    memory_bytes = 0  # the members are counted as the loaded versions they are

    def __init__(self, parts: Sequence[Part], combine: str, release: Callable[[LoadedVersion], None]) -> None:
        self.parts = tuple(parts)
        self.combine = combine
        self._release = release
        self._released = False
        dims = [part.loaded.embedder.dimension for part in self.parts]
        if combine == "mean" and len(set(dims)) > 1:
            shown = ", ".join(f"{part.spec} {dim}" for part, dim in zip(self.parts, dims, strict=True))
            raise ModelLoadError(f"combine = \"mean\" needs members of one dimension ({shown}); use \"concat\"")
        self.dimension = sum(dims) if combine == "concat" else dims[0]
        self.device = "+".join(sorted({str(part.loaded.embedder.device) for part in self.parts}))

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        import numpy as np

        columns = self._member_texts(texts)
        blocks = []
        for part, member_texts in zip(self.parts, columns, strict=True):
            try:
                vectors = np.asarray(_member_vectors(part, member_texts), dtype=np.float32)
            except Exception as exc:  # noqa: BLE001 -- named, then reported as the batch's failure
                raise HotswapError(f"member {part.spec}: {type(exc).__name__}: {exc}") from exc
            if vectors.shape != (len(texts), part.loaded.embedder.dimension):
                raise HotswapError(f"ensemble member {part.spec} returned vectors of shape {vectors.shape}")
            blocks.append(vectors * np.float32(part.weight))
        if self.combine == "concat":
            combined = np.hstack(blocks)
        else:
            combined = np.sum(blocks, axis=0) / np.float32(sum(part.weight for part in self.parts))
        if normalize:
            combined /= np.maximum(np.linalg.norm(combined, axis=1, keepdims=True), np.float32(1e-12))
        return np.ascontiguousarray(combined, dtype=np.float32)

    def _member_texts(self, texts: Sequence[str]) -> list[list[str]]:
        columns: list[list[str]] = [[] for _ in self.parts]
        for text in texts:
            row = _prepared_row(text, len(self.parts))
            if row is None:  # a probe of the daemon's own: each member's default preparation
                row = [part.loaded.text.prepare([text], None)[0] for part in self.parts]
            for column, member_text in zip(columns, row, strict=True):
                column.append(member_text)
        return columns

    @property
    def count_tokens(self) -> Callable[[list[str]], list[int]] | None:
        """Tokens as the first member counts them (the HTTP endpoint's usage), if it can."""
        first = self.parts[0]
        counter = getattr(first.loaded.embedder, "count_tokens", None)
        if not callable(counter):
            return None
        return lambda texts: list(counter(self._member_texts(texts)[0]))

    def space(self) -> dict[str, Any]:
        """Ensembles share a space when they combine the same members' spaces the same way."""
        from hotswapd.core.compat import describe_space

        return {"ensemble": self.combine, "members": [{"weight": part.weight, **describe_space(part.loaded)} for part in self.parts]}

    def describe(self) -> dict[str, Any]:
        return {"combine": self.combine, "members": ", ".join(f"{part.spec} x{part.weight:g}" for part in self.parts)}

    def member_facts(self) -> list[dict[str, Any]]:
        """What a reply says of each member: which version and vectors went into it."""
        return [
            {"model": part.loaded.model, "version": part.loaded.version, "fingerprint": part.loaded.fingerprint, "dim": part.loaded.embedder.dimension, "weight": part.weight}
            for part in self.parts
        ]

    def close(self) -> None:
        """Give the members' leases back (once): they may be unloaded now like any version."""
        if self._released:
            return
        self._released = True
        for part in self.parts:
            self._release(part.loaded)


def _refuse_long(part: Part, texts: list[str]) -> None:
    from hotswapd.pipeline import long_text
    from hotswapd.errors import TextTooLong

    embedder = part.loaded.embedder
    suspects = long_text.might_be_long(texts, getattr(embedder, "max_tokens", None))
    if suspects:
        try:
            long_text.plan(embedder, texts, suspects, "error", False)
        except TextTooLong as exc:
            raise TextTooLong(f"ensemble member {part.spec}: {exc.message}", exc.index) from None


def _member_vectors(part: Part, texts: list[str]) -> Any:
    """A member's vectors of the texts as it computes them alone: a member with
    long_text = "chunk-mean" averages the windows of a text over its maximum."""
    embedder = part.loaded.embedder
    if part.loaded.config.long_text == "chunk-mean":
        import numpy as np

        from hotswapd.pipeline import long_text

        suspects = long_text.might_be_long(texts, getattr(embedder, "max_tokens", None))
        planned = long_text.plan(embedder, texts, suspects, "chunk-mean", False) if suspects else None
        if planned is not None and planned.reshaped:
            windows = embedder.encode(planned.texts, normalize=False)
            return long_text.combine(np.asarray(windows, dtype=np.float32), planned, True)
    return embedder.encode(texts, normalize=True)


def _pack(row: list[str]) -> str:
    if all(text == row[0] for text in row):
        return SAME + row[0]
    return EACH + ",".join(str(len(text)) for text in row) + ":" + "".join(row)


def _prepared_row(text: str, members: int) -> list[str] | None:
    if text.startswith(SAME):
        return [text[len(SAME):]] * members
    if not text.startswith(EACH):
        return None
    head, _, body = text[len(EACH):].partition(":")
    lengths = [int(n) for n in head.split(",")] if head else []
    if len(lengths) != members or sum(lengths) != len(body):
        raise HotswapError("an ensemble text was not prepared for its members")
    row, start = [], 0
    for length in lengths:
        row.append(body[start : start + length])
        start += length
    return row
