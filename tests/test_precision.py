"""Precision per version for the sentence-transformers backend (issue 17, first part): bf16
where the hardware runs it fast and it agrees with fp32, refused with the reason otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotswapd.backends.support.precision import BF16_CPU_FLAGS
from hotswapd.host.cpu import cpu_flags
from hotswapd.errors import ModelLoadError
from hotswapd.pipeline.standalone import encode_texts, load_version
from tests.tinymodel import build_tiny_model

pytestmark = pytest.mark.slow  # imports torch
BF16_HERE = any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("precision")
    model = build_tiny_model(work / "tiny")
    versions = {"fp32": "", "bf16": 'precision = "bf16"\n', "auto": 'precision = "auto"\n', "fp16": 'precision = "fp16"\n',
                "strict": 'precision = "bf16"\nmin_cosine = 1.0\n', "strict-auto": 'precision = "auto"\nmin_cosine = 1.0\n'}
    text = '[models.tiny]\nactive = "fp32"\n' + "".join(
        f'[models.tiny.versions.{name}]\nbackend = "sentence-transformers"\nsource = "{model}"\n{extra}' for name, extra in versions.items()
    )
    text += "".join(f'[models.tiny.versions.tf-{name}]\nbackend = "transformers"\nsource = "{model}"\n{extra}' for name, extra in (("fp32", ""), ("bf16", 'precision = "bf16"\n')))
    (work / "config.toml").write_text(text)
    return work / "config.toml"


TEXTS = ["The bank raised rates.", "A much longer sentence about the weather and the markets " * 4, "short"]


def test_fp16_on_a_cpu_is_refused_with_the_reason(config: Path) -> None:
    with pytest.raises(ModelLoadError, match="fp16 runs fast on CUDA only"):
        load_version(config, "tiny@fp16")


def test_bf16_runs_where_the_cpu_has_it_and_agrees_with_fp32(config: Path) -> None:
    if not BF16_HERE:
        with pytest.raises(ModelLoadError, match="AVX-512 BF16 or AMX"):
            load_version(config, "tiny@bf16")
        return
    fp32, bf16 = load_version(config, "tiny@fp32"), load_version(config, "tiny@bf16")
    facts = bf16.embedder.describe()
    assert facts["precision"] == "bf16" and facts["agreement_with_fp32"]["mean_cosine"] >= 0.99
    cosines = np.sum(encode_texts(fp32, TEXTS) * encode_texts(bf16, TEXTS), axis=1)
    assert cosines.min() >= 0.99 and not np.array_equal(encode_texts(fp32, TEXTS), encode_texts(bf16, TEXTS))
    assert fp32.fingerprint != bf16.fingerprint  # another computation: the cache and corpora tell them apart
    assert fp32.embedder.describe()["precision"] == "fp32"


def test_under_min_cosine_bf16_is_refused_with_the_figures_and_auto_falls_back(config: Path) -> None:
    if BF16_HERE:
        with pytest.raises(ModelLoadError, match=r"bf16 agrees with fp32 at mean cosine 0\.9\d+ .*below min_cosine 1\.0"):
            load_version(config, "tiny@strict")
    fallback = load_version(config, "tiny@strict-auto")
    facts = fallback.embedder.describe()
    assert facts["precision"] == "fp32" and facts["precision_reason"].startswith("auto: ")
    auto = load_version(config, "tiny@auto").embedder.describe()
    if not BF16_HERE:
        assert auto["precision"] == "fp32" and "AVX-512 BF16 or AMX" in auto["precision_reason"]
    elif auto["precision"] == "fp32":  # auto also times both: on a tiny model bf16 may not pay
        assert "measured no faster than fp32" in auto["precision_reason"]
    else:
        assert auto["precision"] == "bf16" and "x fp32 on the check sample" in auto["precision_reason"]


def test_the_transformers_backend_takes_the_same_precision(config: Path) -> None:
    if not BF16_HERE:
        with pytest.raises(ModelLoadError, match="AVX-512 BF16 or AMX"):
            load_version(config, "tiny@tf-bf16")
        return
    fp32, bf16 = load_version(config, "tiny@tf-fp32"), load_version(config, "tiny@tf-bf16")
    assert bf16.embedder.describe()["precision"] == "bf16" and fp32.fingerprint != bf16.fingerprint
    cosines = np.sum(encode_texts(fp32, TEXTS) * encode_texts(bf16, TEXTS), axis=1)
    assert cosines.min() >= 0.99 and not np.array_equal(encode_texts(fp32, TEXTS), encode_texts(bf16, TEXTS))


def test_int8_under_torch_is_refused_with_where_int8_runs_when_the_config_is_read(tmp_path: Path) -> None:
    from hotswapd.config.schema import load_config
    from hotswapd.errors import ConfigError

    (tmp_path / "c.toml").write_text(f'[models.tiny]\nactive = "v"\n[models.tiny.versions.v]\nsource = "{tmp_path}"\nprecision = "int8"\n')
    with pytest.raises(ConfigError, match=r'int8 runs through ONNX Runtime or OpenVINO here, not torch: set backend = "onnx"'):
        load_config(tmp_path / "c.toml")
