"""A version's prompts (its config's, else its model directory's) and preparing request texts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotswapd.errors import RequestError
from hotswapd.text.preprocess import apply

ST_CONFIG = "config_sentence_transformers.json"
MAX_PROMPT_NAME = 64


@dataclass(frozen=True)
class TextPrep:
    """What a loaded version does to each text: preprocessors, then its prompt's prefix."""

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None  # applied when a request names none
    preprocess: tuple[str, ...] = ()

    def prefix(self, requested: str | None) -> str:
        name = requested or self.default_prompt
        if name is None:
            return ""
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise RequestError(f"this version has no prompt {name!r} (its prompts: {known})")
        return self.prompts[name]

    def changes(self, requested: str | None) -> bool:
        return bool(self.preprocess) or bool(self.prefix(requested))

    def prepare(self, texts: list[bytes], requested: str | None) -> list[bytes]:
        prefix = self.prefix(requested)
        return [(prefix + apply(list(self.preprocess), text.decode("utf-8"))).encode("utf-8") for text in texts]


def text_prep(config_prompts: dict[str, str] | None, default_prompt: str | None, preprocess: list[str], model_dir: Path) -> TextPrep:
    """The version's own prompts if its config names any, else its model directory's."""
    prompts, default = (config_prompts, default_prompt) if config_prompts is not None else _directory_prompts(model_dir)
    return TextPrep(dict(prompts or {}), default_prompt if default_prompt is not None else default, tuple(preprocess))


def _directory_prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    """sentence-transformers' ``prompts`` and ``default_prompt_name``; nothing if the file is
    missing or is not what it should be (a model directory is data from outside)."""
    from hotswapd.safefiles import read_regular

    try:
        data: Any = json.loads(read_regular(model_dir / ST_CONFIG, 1 << 20))
    except (OSError, ValueError, RecursionError):
        return {}, None
    if not isinstance(data, dict):
        return {}, None
    raw = data.get("prompts")
    prompts = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_PROMPT_NAME} if isinstance(raw, dict) else {}
    default = data.get("default_prompt_name")
    return prompts, default if isinstance(default, str) and default in prompts else None
