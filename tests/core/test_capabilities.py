"""A backend's optional extras, read once per loaded version (hotswapd.backends.Capabilities),
and what happens when an extra misbehaves: the request is answered exactly once, and what
the load built is not leaked."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hotswapd.errors import HotswapError
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def _idle(inproc) -> bool:  # type: ignore[no-untyped-def]
    return inproc.daemon.admission.describe()["queued_texts"] == 0 and inproc.daemon.state.in_flight == 0 and all(
        item.leases == 0 for item in inproc.daemon.registry.loaded()
    )


def test_an_extra_that_raises_fails_the_load_once_and_closes_the_model(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the capabilities were first read for the version's fingerprint, after the
    load's error handling: the failure was not recorded as a failed load, the embedder was
    never closed, and every request loaded the model again. Now they are read inside it."""

    def broken(self: object) -> int:
        raise RuntimeError("tokenizer not ready")

    monkeypatch.setattr(fakebackend.FakeEmbedder, "max_tokens", property(broken))
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        for _ in range(3):
            with pytest.raises(HotswapError):
                client.encode(["x"], "m@v1")
        control = fakebackend.CONTROLS["v1"]
        assert control.closes == control.loads  # each model the backend built was closed
        assert inproc.daemon.registry.last_error("m", "v1") is not None  # and the load counts as failed


@pytest.mark.parametrize("parts", [(), ("not a part",)], ids=["no-parts", "bad-parts"])
def test_a_backend_declaring_parts_and_merge_still_gets_its_one_answer(
    start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: tuple[object, ...]
) -> None:
    """A plugin embedder with ``parts`` and ``merge`` is taken for a composite (Capabilities.of).
    Before: its branch ran outside the pipeline's guard: no parts never answered; a bad part
    raised out of Pipeline.run, and neither the admission ticket nor the lease came back."""
    monkeypatch.setattr(fakebackend.FakeEmbedder, "parts", parts, raising=False)
    monkeypatch.setattr(fakebackend.FakeEmbedder, "merge", lambda self, blocks, normalize: blocks[0], raising=False)
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client(timeout=3) as client:
        for _ in range(2):  # the first loads the version (loader thread), the second finds it loaded
            try:
                client.encode(["x"], "m@v1")
            except HotswapError as exc:
                assert exc.code != "timeout", exc.message  # an answer, not silence
        deadline = time.monotonic() + 5
        while not _idle(inproc) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _idle(inproc), (inproc.daemon.admission.describe(), inproc.daemon.state.in_flight)


def test_the_fingerprint_is_of_what_computes_in_a_normal_form(start: StartDaemon, tmp_path: Path) -> None:
    """Writing out the model's own max_seq_length changes no vector, so it changes no
    fingerprint (which keys the cache, bridges, resumable jobs and a corpus's belonging);
    another value does, and so does a prompt (issue 27, point 8). The form is otherwise
    the one fingerprints always had: an upgrade changes none."""
    source = tmp_path / "weights"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"w" * 64)
    lines = ["[models.m]", 'active = "implicit"']
    for version, extra in (("implicit", ""), ("explicit", "max_seq_length = 512"), ("shorter", "max_seq_length = 100"),
                           ("prompted", 'prompts = { query = "q: " }')):
        lines += [f"[models.m.versions.{version}]", 'backend = "fake"', f'source = "{source}"', 'tag = "same"', extra]
    with start("\n".join(lines) + "\n") as daemon, daemon.client() as client:
        prints = {version: client.preload(f"m@{version}")["fingerprint"] for version in ("implicit", "explicit", "shorter", "prompted")}
        assert prints["implicit"] == prints["explicit"], prints  # 512 is the model's own
        assert prints["shorter"] != prints["implicit"] and prints["prompted"] != prints["implicit"]
        assert client.encode(["x"], "m@explicit").fingerprint == prints["implicit"]
        # The fingerprint of a config that writes nothing of the kind is what it was before
        # this normal form (computed here as the old code did).
        import hashlib

        loaded = daemon.daemon.registry.get("m", "implicit")
        from hotswapd.config.schema import LIVE_FIELDS
        from hotswapd.pipeline.loaded import NOT_COMPUTATION

        old_options = loaded.config.model_dump_json(exclude=set(LIVE_FIELDS) | NOT_COMPUTATION)
        old = hashlib.sha256(f"{loaded.weights}|{old_options}|{loaded.embedder.device}".encode()).digest()[:16].hex()[:16]
        assert prints["implicit"] == old
