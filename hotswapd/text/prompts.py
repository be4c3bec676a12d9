"""A version's prompts (its config's, else its model directory's) and preparing request texts."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotswapd.errors import ModelLoadError, RequestError, TextTooLong
from hotswapd.text.decode import utf8_size
from hotswapd.text.preprocess import apply

log = logging.getLogger(__name__)
ST_CONFIG = "config_sentence_transformers.json"
MAX_PROMPT_NAME = 64
MAX_PROMPT_TEXT = 4096


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

    def prepare(self, texts: list[str], requested: str | None, max_bytes: int | None = None) -> list[str]:
        """The texts as the model sees them; one over ``max_bytes`` after its prompt and
        preprocessing (NFKC can make a text 18 times longer) is refused, as a longer text
        from the client would be."""
        prefix = self.prefix(requested)
        prepared = []
        for index, text in enumerate(texts):
            ready = prefix + apply(list(self.preprocess), text)
            if max_bytes is not None and (size := utf8_size(ready)) > max_bytes:
                raise TextTooLong(f"text {index} is {size} bytes after its prompt and preprocessing; the limit is {max_bytes} (daemon.max_text_bytes)", index)
            prepared.append(ready)
        return prepared


def text_prep(config_prompts: dict[str, str] | None, default_prompt: str | None, preprocess: list[str], model_dir: Path) -> TextPrep:
    """The version's own prompts if its config names any, else its model directory's; a
    default prompt the version does not have fails the load (every request would fail)."""
    prompts, default = (config_prompts, default_prompt) if config_prompts is not None else _directory_prompts(model_dir)
    chosen = default_prompt if default_prompt is not None else default
    if chosen is not None and chosen not in (prompts or {}):
        raise ModelLoadError(f"default_prompt {chosen!r} is not among the version's prompts: {', '.join(sorted(prompts or {})) or 'none'}")
    return TextPrep(dict(prompts or {}), chosen, tuple(preprocess))


def _directory_prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    """sentence-transformers' ``prompts`` and ``default_prompt_name``; nothing if the file is
    missing or is not what it should be (a model directory is data from outside)."""
    from hotswapd.host.safefiles import read_regular

    try:
        data: Any = json.loads(read_regular(model_dir / ST_CONFIG, 1 << 20))
    except (OSError, ValueError, RecursionError):
        return {}, None
    if not isinstance(data, dict):
        return {}, None
    raw = data.get("prompts")
    prompts = {
        k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= MAX_PROMPT_NAME and len(v) <= MAX_PROMPT_TEXT
    } if isinstance(raw, dict) else {}
    if isinstance(raw, dict) and len(prompts) < len(raw):
        log.warning("%s: prompts that are not short strings were left out", model_dir / ST_CONFIG)
    default = data.get("default_prompt_name")
    return prompts, default if isinstance(default, str) and default in prompts else None
