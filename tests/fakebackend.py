"""A fake backend for the in-process tests: deterministic vectors, and misbehaviour on demand.

Each version names a ``tag``; :data:`CONTROLS` holds one :class:`Control` per tag, through
which a test makes the model slow, fail, hang, or block on an event, and reads what
happened (loads, closes, encodes, the texts it saw). Encoding on a closed model raises,
as ONNX Runtime does on a deleted session, so a close under a live request is caught.
A vector is a function of the text and ``scale``: a test can tell which version made it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from hotswapd.host import load_steps
from hotswapd.core.cost_prior import PROBE_MARK
from hotswapd.text.probe_texts import CALIBRATION_MARK


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str = "default"
    scale: float = 1.0
    shift: int = 0  # another mapping of characters to components: another embedding space
    dim: int = 8
    max_tokens: int = 512  # a word is a token here (see count_tokens)
    # For a daemon in another process, where a test cannot reach the controls: every
    # encode call sleeps this long.
    sleep_seconds: float = 0.0
    probe_seconds: float = 0.0  # each call of the load's cost probe sleeps this long
    tokenizes: bool = False  # offers tokenize/encode_tokens, as the ONNX and OpenVINO backends do
    # A load that names these steps (as an exporting backend does), each lasting load_step_seconds.
    load_steps: list[str] = []
    load_step_seconds: float = 0.0
    # For a daemon in another process: its loads fail with this message.
    fail_load: str | None = None


@dataclass
class Control:
    gate: threading.Event | None = None  # encode waits on it (up to 60 s) while set here
    load_gate: threading.Event | None = None  # load waits on it
    calibration_gate: threading.Event | None = None  # the version's int8 calibration waits on it
    fail: str | None = None  # encode raises RuntimeError(fail)
    fail_on: str | None = None  # encode raises when this text is in its batch
    fail_load: str | None = None
    delay: float = 0.0  # seconds per encode call
    delay_per_text: float = 0.0  # and per text in it (a cost that grows with the batch, as a model's does)
    entered: threading.Event = field(default_factory=threading.Event)  # an encode has begun
    loads: int = 0
    load_attempts: int = 0
    closes: int = 0
    encodes: int = 0
    seen: list[str] = field(default_factory=list)  # every text encoded, in order
    # The cost probe each load runs (hotswapd.core.cost_prior) is kept apart from requests:
    # counted here, never gated, delayed, failed or seen; it sleeps the option probe_seconds.
    probes: int = 0
    releases: int = 0  # release_memory() calls (the daemon gives a burst's memory back)
    # With the option tokenizes: what tokenize() was called on (thread name, texts), what
    # encode_tokens() ran (each call's token counts), a gate tokenize waits on, a failure.
    tokenized: list[tuple[str, int]] = field(default_factory=list)
    token_batches: list[list[int]] = field(default_factory=list)
    tokenize_gate: threading.Event | None = None
    tokenize_entered: threading.Event = field(default_factory=threading.Event)
    fail_tokenize: str | None = None


CONTROLS: dict[str, Control] = defaultdict(Control)
_lock = threading.Lock()
_inside = 0
max_concurrent = 0  # the most encode calls ever running at once, across all fake models


def reset() -> None:
    global max_concurrent
    CONTROLS.clear()
    max_concurrent = 0


def vector(text: str, scale: float, dim: int, shift: int = 0) -> np.ndarray:
    out = np.ones(dim, dtype=np.float32)
    for char in text:
        out[(ord(char) * (1 + shift)) % dim] += 1.0
    return out * scale


class FakeEmbedder:
    device = "cpu"

    def __init__(self, options: Options, max_seq_length: int | None = None) -> None:
        self.dimension = options.dim
        self._max_tokens = max_seq_length or options.max_tokens  # the version's max_seq_length wins, as in the real backends
        self.model_max_tokens = options.max_tokens  # the model's own, as the real backends report it
        self.batch_size = 32
        self._options = options
        self._control = CONTROLS[options.tag]
        self.closed = False

    def encode(self, texts: list[str], *, normalize: bool) -> np.ndarray:
        global _inside, max_concurrent
        control = self._control
        with _lock:
            _inside += 1
            max_concurrent = max(max_concurrent, _inside)
        try:
            if self.closed:
                raise RuntimeError(f"fake model {self._options.tag!r} used after close()")
            if texts and texts[0].startswith(CALIBRATION_MARK):  # a version's int8 calibration: not a request
                if control.calibration_gate is not None:
                    control.calibration_gate.wait(60)
                return np.stack([vector(text, self._options.scale, self._options.dim, self._options.shift) for text in texts])
            if texts and texts[0].startswith(PROBE_MARK):
                control.probes += 1
                time.sleep(self._options.probe_seconds)
                return np.stack([vector(text, self._options.scale, self._options.dim, self._options.shift) for text in texts])
            control.entered.set()
            if control.gate is not None:
                control.gate.wait(60)
            # HOTSWAP_FAKE_SLEEP: a slow model in a daemon process without making the config
            # (so the fingerprint) differ from a fast one's.
            pause = control.delay or self._options.sleep_seconds or float(os.environ.get("HOTSWAP_FAKE_SLEEP", "0"))
            pause += control.delay_per_text * len(texts)
            if pause:
                time.sleep(pause)
            if control.fail:
                raise RuntimeError(control.fail)
            # HOTSWAP_FAKE_FAIL_ON=TAG:TEXT: in a daemon process, this version fails a batch
            # holding TEXT (its config, so its fingerprint, the same as a healthy member's).
            tag, _, text = os.environ.get("HOTSWAP_FAKE_FAIL_ON", "").partition(":")
            if tag == self._options.tag and text in texts:
                raise RuntimeError(f"fake model refuses {text!r} (HOTSWAP_FAKE_FAIL_ON)")
            if control.fail_on is not None and control.fail_on in texts:
                raise RuntimeError(f"fake model refuses {control.fail_on!r}")
            control.encodes += 1
            control.seen.extend(texts)
            vectors = np.stack([vector(text, self._options.scale, self._options.dim, self._options.shift) for text in texts])
            if normalize:
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            return vectors
        finally:
            with _lock:
                _inside -= 1

    def release_memory(self) -> None:
        if self.closed:
            raise RuntimeError(f"fake model {self._options.tag!r} used after close()")
        self._control.releases += 1

    def count_tokens(self, texts: list[str]) -> list[int]:
        """A word a token, plus the two special tokens a BERT adds."""
        return [len(text.split()) + 2 for text in texts]

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_windows(self, text: str, window: int, overlap: int) -> list[tuple[str, int]]:
        words = text.split()
        pieces, start = [], 0
        while True:
            end = min(start + window, len(words))
            pieces.append((" ".join(words[start:end]), end - start))
            if end == len(words):
                return pieces
            start = max(end - overlap, start + 1)

    def close(self) -> None:
        self.closed = True
        self._control.closes += 1


@dataclass(frozen=True)
class FakeTokens:
    """A text as the fake tokenizer gives it: a word a token plus the two special tokens, so
    a text of punctuation marks is short here however long its estimate (length_key)."""

    text: str

    def __len__(self) -> int:
        return len(self.text.split()) + 2


class TokenizingFakeEmbedder(FakeEmbedder):
    def tokenize(self, texts: list[str]) -> list[FakeTokens]:
        control = self._control
        control.tokenized.append((threading.current_thread().name, len(texts)))
        control.tokenize_entered.set()
        if control.tokenize_gate is not None:
            control.tokenize_gate.wait(60)
        if control.fail_tokenize:
            raise RuntimeError(control.fail_tokenize)
        return [FakeTokens(text) for text in texts]

    def encode_tokens(self, tokens: list[FakeTokens], *, normalize: bool) -> np.ndarray:
        self._control.token_batches.append([len(token) for token in tokens])
        return self.encode([token.text for token in tokens], normalize=normalize)


def load(path: Path, version: Any) -> FakeEmbedder:
    options: Options = version.options
    control = CONTROLS[options.tag]
    control.load_attempts += 1
    if control.load_gate is not None:
        control.load_gate.wait(60)
    if control.fail_load or options.fail_load:
        raise RuntimeError(control.fail_load or options.fail_load)
    # HOTSWAP_FAKE_SLOW_LOAD=TAG:SECONDS: in a daemon process, this version loads slowly.
    tag, _, seconds = os.environ.get("HOTSWAP_FAKE_SLOW_LOAD", "").partition(":")
    if tag == options.tag:
        time.sleep(float(seconds))
    for step in options.load_steps:
        load_steps.report(step)
        time.sleep(options.load_step_seconds)
    control.loads += 1
    kind = TokenizingFakeEmbedder if options.tokenizes else FakeEmbedder
    return kind(options, getattr(version, "max_seq_length", None))
