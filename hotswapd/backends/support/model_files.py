"""Reading a model directory the way sentence-transformers lays it out.

A sentence-transformers directory names its modules in ``modules.json``: the transformer
(usually at the root), a ``Pooling`` module with its mode, and often ``Normalize``. Backends
that do not run sentence-transformers itself (ONNX, plain transformers, a remote endpoint)
read the same files so that their vectors match it: same pooling, same sequence length.
A plain transformers directory has none of these files, and gets the defaults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hotswapd.errors import ModelLoadError

DEFAULT_MAX_SEQ_LENGTH = 512
# sentence-transformers' pooling config keys, in the order its get_pooling_mode_str() uses.
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class ModelLayout:
    root: Path
    transformer_dir: Path  # where config.json, the weights and the tokenizer live
    pooling: str | None  # None: not a sentence-transformers directory (or no Pooling module)
    normalizes: bool
    max_seq_length: int

    @property
    def tokenizer_file(self) -> Path:
        return self.transformer_dir / "tokenizer.json"


def read_json(path: Path) -> dict | list | None:
    """A model directory's JSON file; None when it is missing, a typed load error when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge numbers, nesting
        raise ModelLoadError(f"{path}: unreadable: {type(exc).__name__}: {str(exc)[:200]}") from exc


def read_layout(root: Path) -> ModelLayout:
    """Describe a model directory; works for sentence-transformers and plain transformers ones."""
    if not root.is_dir():
        raise ModelLoadError(f"{root} is not a model directory")
    modules = read_json(root / "modules.json") or []
    transformer_dir, pooling, normalizes = root, None, False
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        module_dir = root / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = module_dir
        elif kind == "Pooling":
            pooling = _pooling_mode(read_json(module_dir / "config.json") or {})
        elif kind == "Normalize":
            normalizes = True
    return ModelLayout(root, transformer_dir, pooling, normalizes, _max_seq_length(root, transformer_dir))


def _pooling_mode(config: dict) -> str:
    # sentence-transformers 6 writes "pooling_mode" (a name or a list); earlier releases
    # wrote one boolean per mode.
    mode = config.get("pooling_mode")
    if isinstance(mode, str) and mode:
        return mode
    if isinstance(mode, list) and mode:
        return "+".join(str(part) for part in mode)
    modes = [name for key, name in _POOLING_KEYS.items() if config.get(key)]
    return "+".join(modes) or "mean"


def _max_seq_length(root: Path, transformer_dir: Path) -> int:
    for candidate in (transformer_dir / "sentence_bert_config.json", root / "sentence_bert_config.json"):
        st_config = read_json(candidate)
        if isinstance(st_config, dict) and st_config.get("max_seq_length"):
            return int(st_config["max_seq_length"])
    # As sentence-transformers does without its own config: the tokenizer's limit, capped
    # by the position embeddings the model has.
    limits = []
    tokenizer_config = read_json(transformer_dir / "tokenizer_config.json")
    if isinstance(tokenizer_config, dict) and isinstance(tokenizer_config.get("model_max_length"), int):
        limits.append(tokenizer_config["model_max_length"])
    model_config = read_json(transformer_dir / "config.json")
    if isinstance(model_config, dict) and isinstance(model_config.get("max_position_embeddings"), int):
        limits.append(model_config["max_position_embeddings"])
    sane = [limit for limit in limits if 0 < limit < 1_000_000]
    return min(sane) if sane else DEFAULT_MAX_SEQ_LENGTH


def vector_space(pooling: str | None, normalizes: bool, vocabulary: dict[str, int]) -> dict[str, object]:
    """What the switch guard compares between versions: pooling, built-in normalisation and
    a hash of the tokenizer vocabulary (the same for every backend of the same model)."""
    vocab = json.dumps(sorted(vocabulary.items())).encode()
    return {"pooling": pooling, "model_normalizes": normalizes, "vocab": hashlib.sha256(vocab).hexdigest()[:12]}
