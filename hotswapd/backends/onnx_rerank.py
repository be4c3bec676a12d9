"""Rerank versions on ONNX Runtime (``task = "rerank"`` with backend ``onnx``): a
cross-encoder exported to ONNX once (fp32, or quantised to int8), cached, and checked
against sentence-transformers' CrossEncoder before it may serve (the ranks it gives each
query's documents must agree: Spearman >= ``min_spearman``).

As on torch (hotswapd.backends.cross_encoder), each pipeline "text" is a (query, document)
pair and each "vector" its raw relevance logit; the pair is tokenised together, truncated
longest-first to the model's maximum, as transformers does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.backends.support.export_cache import OPSET, created_once
from hotswapd.backends.support.model_files import read_json, vector_space
from hotswapd.backends.support.tokenizing import PairTokens
from hotswapd.errors import ModelLoadError
from hotswapd.text.pairs import split_pair

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)
EXPORT_MODULE = "hotswapd.backends.cross_encoder_export"
EXPORT_FORMAT = 1  # bump when the exported graph would differ


class OnnxCrossEncoder(PairTokens):
    dimension = 1

    def __init__(self, session: Any, tokenizer_file: Path, max_length: int, device: str, batch_size: int) -> None:
        from tokenizers import Tokenizer

        self._session = session
        self._inputs = {item.name for item in session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        pad = next((i for token in ("[PAD]", "<pad>") if (i := self._tokenizer.token_to_id(token)) is not None), 0)
        self._tokenizer.enable_padding(pad_id=pad)
        self.max_tokens = max_length
        self.device = device
        self.batch_size = batch_size
        self._space = {"task": "rerank", **vector_space(None, False, self._tokenizer.get_vocab(with_added_tokens=True))}

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        """Raw logits, one row per pair (``normalize`` has no meaning for a score)."""
        import numpy as np

        rows = []
        pairs = [tuple(part.strip() for part in split_pair(text)) for text in texts]
        for start in range(0, len(pairs), self.batch_size):
            encodings = self._tokenizer.encode_batch(pairs[start : start + self.batch_size])
            feeds = {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
            }
            logits = self._session.run(["logits"], {name: value for name, value in feeds.items() if name in self._inputs})[0]
            rows.append(np.asarray(logits, dtype=np.float32).reshape(-1, 1))
        return np.ascontiguousarray(np.vstack(rows)) if rows else np.zeros((0, 1), dtype=np.float32)

    def space(self) -> dict[str, object]:
        return dict(self._space)

    def close(self) -> None:
        del self._session


def load(path: Path, version: VersionSpec) -> OnnxCrossEncoder:
    import onnxruntime

    options: Any = version.options
    if not path.is_dir():
        raise ModelLoadError(f"{path}: a rerank version on onnx exports a cross-encoder directory (a given .onnx file is not supported yet)")
    key = _cache_key(path, options.quantize)
    check = created_once(_cache_root(), key, EXPORT_MODULE, ["--source", str(path), "--quantize", options.quantize], version.trust_remote_code, ("model.onnx",))
    if not check["spearman_min"] >= options.min_spearman:  # NaN refuses too
        raise ModelLoadError(
            f"the {options.quantize if options.quantize != 'none' else 'fp32'} ONNX export of {path} orders documents unlike the torch model: "
            f"Spearman {check['spearman_min']:.4f} (mean {check['spearman_mean']:.4f}) on the {check['queries']}-query check, "
            f"below min_spearman {options.min_spearman}: refused"
        )
    session_options = onnxruntime.SessionOptions()
    session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.inter_op_num_threads = 1
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin_wait else "0")
    if options.intra_op_threads:
        session_options.intra_op_num_threads = options.intra_op_threads
    file = _cache_root() / key / "model.onnx"
    try:
        session = onnxruntime.InferenceSession(str(file), session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
        raise ModelLoadError(f"ONNX Runtime cannot load {file}: {exc}") from exc
    scorer = OnnxCrossEncoder(session, path / "tokenizer.json", version.max_seq_length or max_length(path), "cpu", version.batch_size)
    scorer.details = {"onnx_file": str(file), "exported_now": check.get("exported_now", False), "check": check}  # type: ignore[attr-defined]
    scorer.precision = "int8" if options.quantize == "int8" else "fp32"  # type: ignore[attr-defined]
    log.info("onnx: serving the cross-encoder %s (%s)", file, options.quantize)
    return scorer


def max_length(source: Path) -> int:
    """The model's own limit: its tokenizer's, else its position embeddings', at most 512."""
    for name, key in (("tokenizer_config.json", "model_max_length"), ("config.json", "max_position_embeddings")):
        found = read_json(source / name)  # a broken file is the load's typed error; a missing one, the next guess
        value = found.get(key) if isinstance(found, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000:
            return min(value, 512)
    return 512


def _cache_root() -> Path:
    from hotswapd.host.paths import cache_dir

    return cache_dir() / "onnx"


def _cache_key(source: Path, quantize: str) -> str:
    from hotswapd.sources.fingerprint import fingerprint

    parts = [fingerprint(source), f"rerank-{quantize}", f"opset{OPSET}", f"rerank-format{EXPORT_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
