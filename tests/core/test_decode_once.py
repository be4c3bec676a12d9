"""A request's text is decoded from UTF-8 once on its way to the model (hotswapd.text.decode).

Before: validation, prompts, the length plan and the batch each decoded it again (up to four
times a text). ``bytes.decode`` cannot be counted from outside, so the check is two-sided:
the one decoder is called once per text, and no module on the path decodes otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hotswapd
from hotswapd.text import decode
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config

# Every module a text passes through between the frame and the backend.
HOT_PATH = [
    "core/encode_op.py",
    "pipeline/encoding.py",
    "pipeline/long_text.py",
    "pipeline/batching.py",
    "pipeline/inference.py",
    "pipeline/cache.py",
    "text/prompts.py",
    "text/preprocess.py",
    "ensemble/embedder.py",
    "corpus/search_op.py",
]


def test_each_text_is_decoded_once_with_prompts_preprocessing_and_long_texts(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hotswapd.core.encode_op as encode_op

    calls: list[int] = []

    def counting(frame: bytes, index: int) -> str:
        calls.append(index)
        return decode.wire_text(frame, index)

    options = {"max_seq_length": 12, "long_text": "chunk-mean", "preprocess": ["lowercase"]}
    config = fake_config(tmp_path, {"v1": options}).replace('tag = "v1"', 'tag = "v1"\nprompts = { q = "query: " }')
    with start(config) as daemon, daemon.client() as client:
        client.encode(["warm"])
        monkeypatch.setattr(encode_op, "wire_text", counting)
        texts = ["Short one", "Ünïcode tëxt", "a much longer text of many words that is cut into windows", "x"]
        client.encode(texts, prompt="q", no_cache=True)
        assert sorted(calls) == [0, 1, 2, 3]
        seen = fakebackend.CONTROLS["v1"].seen
        assert "query: ünïcode tëxt" in seen and "query: short one" in seen  # it did go through prompts and preprocessing
        assert "query: a much longer" in seen and "query: " + texts[2].lower() not in seen  # and cut into windows


def _decodes(tree: ast.AST) -> list[int]:
    """Lines that decode bytes: ``x.decode(...)``, ``str(x, encoding)``, ``codecs.decode``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("decode", "utf_8_decode"):
            lines.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id == "str" and len(node.args) >= 2:
            lines.append(node.lineno)
    return lines


def test_no_module_on_the_path_decodes_but_the_one_decoder() -> None:
    root = Path(hotswapd.__file__).parent
    found = {name: _decodes(ast.parse((root / name).read_text())) for name in HOT_PATH}
    # batching.as_str decodes only bytes a caller queued itself (no request path does).
    found["pipeline/batching.py"] = [line for line in found["pipeline/batching.py"] if "isinstance(text, bytes)" not in (root / "pipeline/batching.py").read_text().splitlines()[line - 1]]
    assert {name: lines for name, lines in found.items() if lines} == {}
    assert _decodes(ast.parse((root / "text/decode.py").read_text()))  # the scan does see a decode


def test_each_request_header_is_parsed_once(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the router parsed a header for its id, then again to validate it."""
    from hotswapd.wire import protocol

    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        client.encode(["warm"])
        parsed: list[bytes] = []
        original = protocol.json.loads

        def counting(data: bytes | str, **kwargs: object) -> object:
            parsed.append(bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data.encode())
            return original(data, **kwargs)

        monkeypatch.setattr(protocol.json, "loads", counting)
        client.encode(["one", "two"])
        monkeypatch.undo()
        headers = [data for data in parsed if b'"op"' in data]
        assert len(headers) == 1, headers  # the request's header (the client parses its reply with its own json)
