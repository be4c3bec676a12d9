"""Backend ``sagemaker``: a remote endpoint that answers token embeddings.

Tokenisation and pooling stay local (the version's ``source`` is a model directory with the
tokenizer and, optionally, a sentence-transformers pooling config); only token ids go to
the endpoint, as ``{"instances": [[ids...], ...]}`` through ``invoke_endpoint`` of boto3's
``sagemaker-runtime`` client. The endpoint answers per-instance token embeddings
(``[[[float]]]``, or the same under ``"predictions"`` or ``"embeddings"``), and pooling
applies the attention mask here. A remote model holds no memory in the daemon.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from hotswapd.backends.support.model_files import read_layout, vector_space
from hotswapd.backends.support.pooling import PoolingName, choose_mode, l2_normalize, pool
from hotswapd.backends.support.remote_identity import MAX_ANSWER_BYTES, RemoteIdentity
from hotswapd.backends.support.tokenizing import TextTokenizer, TokenizedBackend
from hotswapd.errors import InferenceError, ModelLoadError

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(min_length=1)
    region: str | None = None  # default: boto3's own resolution (AWS_REGION, profile)
    endpoint_url: str | None = None  # for private endpoints (and tests)
    timeout_seconds: PositiveFloat = 30.0
    retries: int = Field(default=2, ge=0, le=10)  # on 5xx, throttling and timeouts
    pooling: PoolingName | None = None
    recheck_seconds: PositiveFloat = 300.0  # how often the endpoint's model is probed again


class SageMakerEmbedder(TokenizedBackend):
    device = "remote"
    memory_bytes = 0

    def __init__(self, client: Any, options: Options, tokenizer: TextTokenizer, pooling: str, normalizes: bool, batch_size: int) -> None:
        self._client = client
        self._options = options
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._normalizes = normalizes
        self.batch_size = batch_size
        where = f"sagemaker:{options.endpoint}|{options.endpoint_url}"
        self._identity = RemoteIdentity(where, lambda texts: self.encode(texts, normalize=False), options.recheck_seconds)
        self.dimension = self._identity.dimension
        self._identity.start()

    @property
    def identity(self) -> str:
        """Part of the version's fingerprint: changes when the model behind the endpoint does."""
        return self._identity.value

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        import numpy as np

        ids = self._tokenizer.token_ids(texts)
        parts = [self._pooled(ids[start : start + self.batch_size]) for start in range(0, len(ids), self.batch_size)]
        vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        return l2_normalize(vectors) if normalize else vectors

    def _pooled(self, ids: list[list[int]]) -> np.ndarray:
        import numpy as np

        rows = self._invoke(ids)
        width = max(len(row) for row in ids)
        dim = len(rows[0][0])
        tokens = np.zeros((len(ids), width, dim), dtype=np.float32)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for index, (row, sent) in enumerate(zip(rows, ids, strict=True)):
            matrix = np.asarray(row, dtype=np.float32)
            # An endpoint may pad its answer; the real tokens are the ones we sent.
            if matrix.ndim != 2 or matrix.shape[0] < len(sent) or matrix.shape[1] != dim:
                raise InferenceError(f"endpoint {self._options.endpoint!r} answered a {matrix.shape} matrix for {len(sent)} tokens")
            tokens[index, : len(sent)] = matrix[: len(sent)]
            mask[index, : len(sent)] = 1
        return pool(tokens, mask, self._pooling)

    def _invoke(self, ids: list[list[int]]) -> list[Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._options.endpoint
        try:
            reply = self._client.invoke_endpoint(
                EndpointName=name, ContentType="application/json", Accept="application/json", Body=json.dumps({"instances": ids})
            )
            body = reply["Body"].read(MAX_ANSWER_BYTES + 1)  # never a whole unbounded answer in memory
            if len(body) > MAX_ANSWER_BYTES:
                raise InferenceError(f"endpoint {name!r} answered more than {MAX_ANSWER_BYTES} bytes: not an answer")
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            message = exc.response.get("Error", {}).get("Message") or str(exc)
            raise InferenceError(f"endpoint {name!r} answered HTTP {status}: {message}") from exc
        except BotoCoreError as exc:  # timeouts, refused connections, after the retries
            raise InferenceError(f"endpoint {name!r} unreachable: {exc}") from exc
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError) as exc:  # bad JSON, huge numbers, deep nesting
            raise InferenceError(f"endpoint {name!r} answered invalid JSON: {body[:80]!r}") from exc
        if isinstance(answer, dict):
            answer = answer.get("predictions", answer.get("embeddings"))
        if not isinstance(answer, list) or len(answer) != len(ids) or not all(isinstance(row, list) and row for row in answer):
            raise InferenceError(f"endpoint {name!r} answered JSON without one token matrix per instance")
        return answer

    def space(self) -> dict[str, object]:
        return vector_space(self._pooling, self._normalizes, self._tokenizer.vocabulary())

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self._options.endpoint, "endpoint_url": self._options.endpoint_url}

    def close(self) -> None:
        self._identity.close()
        self._client.close()


def load(path: Path, version: VersionSpec) -> SageMakerEmbedder:
    try:
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError
    except ImportError as exc:
        raise ModelLoadError("backend 'sagemaker' needs boto3: pip install 'hotswap[aws]'") from exc
    options: Options = version.options  # type: ignore[assignment]
    layout = read_layout(path)
    tokenizer = TextTokenizer(layout.tokenizer_file, version.max_seq_length or layout.max_seq_length)
    settings = BotoConfig(
        connect_timeout=options.timeout_seconds,
        read_timeout=options.timeout_seconds,
        retries={"total_max_attempts": options.retries + 1, "mode": "standard"},
    )
    try:
        client = boto3.client("sagemaker-runtime", region_name=options.region, endpoint_url=options.endpoint_url, config=settings)
    except BotoCoreError as exc:
        raise ModelLoadError(f"cannot set up the sagemaker-runtime client: {exc}") from exc
    try:
        embedder = SageMakerEmbedder(client, options, tokenizer, choose_mode(options.pooling, layout.pooling), layout.normalizes, version.batch_size)
        embedder.model_max_tokens = layout.max_seq_length  # the model's own limit (the fingerprint's normal form)
    except InferenceError as exc:
        client.close()
        raise ModelLoadError(f"sagemaker endpoint check failed: {exc.message}") from exc
    log.info("sagemaker: endpoint %s answers %d-dim token embeddings", options.endpoint, embedder.dimension)
    return embedder


def import_libraries() -> None:
    """Import what load() needs, so the RSS measured around a load is the model's, not the libraries'."""
    try:
        import boto3  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        pass  # load() reports the missing package with an install hint
