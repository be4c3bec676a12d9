"""An ensemble's vectors: each member's own vectors of the same texts, combined.

A request to an ensemble runs as one request per member through the pipeline
(:meth:`hotswapd.pipeline.encoding.Pipeline.run` sees the :class:`EnsembleEmbedder`'s
``parts`` and ``merge``): each member sees a text as it would alone, with its own
preprocessing, its own prompt (`--prompt query` is "query: " for e5 and a sentence for
BGE), its own ``long_text`` policy and its own cache, and its batches are shared with that
member's other traffic. The rows come back normalised, are weighted, concatenated or
averaged here, and normalised again when asked.

Members are leased from the registry for as long as the ensemble is loaded: the memory
budget counts them as the loaded versions they are. Evicting a member of an idle ensemble
unloads the ensemble with it (hotswapd.core.memory.in_use); a busy or pinned ensemble
keeps its members. :meth:`EnsembleEmbedder.encode` (the daemon's own probes: warm-up, the
agreement check, periodic rounds) runs the members in this thread, each as it would alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotswapd.errors import HotswapError, ModelLoadError
from hotswapd.pipeline.encoding import EncodeJob, encode_here

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.pipeline.loaded import LoadedVersion

@dataclass(frozen=True)
class Part:
    loaded: LoadedVersion
    weight: float

    @property
    def spec(self) -> str:
        return f"{self.loaded.model}@{self.loaded.version}"


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

    def merge(self, blocks: Sequence[np.ndarray], normalize: bool) -> np.ndarray:
        """The members' normalised rows (in ``parts`` order), weighted and combined."""
        import numpy as np

        weighted = []
        for part, block in zip(self.parts, blocks, strict=True):
            vectors = np.asarray(block, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != part.loaded.embedder.dimension or vectors.shape[0] != len(blocks[0]):
                raise HotswapError(f"ensemble member {part.spec} returned vectors of shape {vectors.shape}")
            weighted.append(vectors * np.float32(part.weight))
        if self.combine == "concat":
            combined = np.hstack(weighted)
        else:
            combined = np.sum(weighted, axis=0) / np.float32(sum(part.weight for part in self.parts))
        if normalize:
            combined /= np.maximum(np.linalg.norm(combined, axis=1, keepdims=True), np.float32(1e-12))
        return np.ascontiguousarray(combined, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        blocks = []
        for part in self.parts:
            try:
                # The daemon's own probes (warm-up, agreement, periodic rounds): a member
                # that refuses long texts in requests has them cut here, as alone.
                policy = "truncate" if part.loaded.config.long_text == "error" else None
                blocks.append(encode_here(EncodeJob(part.loaded, list(texts), True, long_text=policy)).vectors)
            except Exception as exc:  # noqa: BLE001 -- named, then reported as the batch's failure
                raise HotswapError(f"member {part.spec}: {type(exc).__name__}: {exc}") from exc
        return self.merge(blocks, normalize)

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
