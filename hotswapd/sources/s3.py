"""Fetching a model from S3 into the local cache: verified, resumable, placed atomically.

``s3://bucket/prefix`` names every object under ``prefix/`` (a model directory) or one
object (a single file). The listing's keys, sizes and ETags make a manifest; its hash names
the cache directory, so a changed object in S3 is a new download and an unchanged one is
never fetched twice. Each object downloads into a ``.part`` file that a later attempt
resumes with a range request (only while the ETag is unchanged); its size and, for
single-part uploads, its MD5 (the ETag) are checked before it is renamed into place; the
finished directory is renamed into the cache in one step, so a reader never sees half a
model. Credentials, region and endpoint come from boto3's usual sources (environment,
profile, ``AWS_ENDPOINT_URL_S3``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswapd.errors import ModelLoadError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class S3Object:
    key: str
    relative: str  # path inside the model directory ("" for a single-file source)
    size: int
    etag: str


def split_url(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"source {url!r}: expected s3://BUCKET/PREFIX")
    return bucket, prefix


def _client() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ModelLoadError("s3:// sources need boto3: pip install 'hotswap[aws]'") from exc
    return boto3.client("s3")


@contextmanager
def _s3_errors(url: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        if code in ("NoSuchBucket",):
            raise ModelLoadError(f"source {url}: bucket {split_url(url)[0]!r} does not exist") from exc
        raise ModelLoadError(f"source {url}: S3 answered {code}: {error.get('Message', '')}".rstrip(": ")) from exc
    except BotoCoreError as exc:
        raise ModelLoadError(f"source {url}: cannot reach S3: {exc}") from exc


def list_objects(url: str, client: Any | None = None) -> list[S3Object]:
    """The objects a source names; raises ModelLoadError when there are none."""
    client = client or _client()
    bucket, prefix = split_url(url)
    directory = prefix.rstrip("/") + "/" if prefix else ""
    found: list[S3Object] = []
    with _s3_errors(url):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=directory):
            for item in page.get("Contents", []):
                relative = item["Key"][len(directory) :]
                if relative and not relative.endswith("/"):
                    found.append(S3Object(item["Key"], relative, item["Size"], item["ETag"].strip('"')))
        if not found and prefix and not prefix.endswith("/"):
            found = _single_object(client, bucket, prefix)
    if not found:
        raise ModelLoadError(f"source {url}: no objects under that prefix")
    return sorted(found, key=lambda obj: obj.relative)


def _single_object(client: Any, bucket: str, key: str) -> list[S3Object]:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return []
        raise
    return [S3Object(key, "", head["ContentLength"], head["ETag"].strip('"'))]


def fetch(url: str, cache_root: Path) -> Path:
    """The local copy of an S3 source, downloading what is missing."""
    client = _client()
    objects = list_objects(url, client)
    bucket, _ = split_url(url)
    manifest = json.dumps([(obj.relative, obj.size, obj.etag) for obj in objects]).encode()
    final = cache_root / "s3" / bucket / hashlib.sha256(manifest).hexdigest()[:20]
    single_name = Path(objects[0].key).name if objects[0].relative == "" else None
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(final.with_suffix(".lock")):
            if not final.is_dir():  # another daemon may have finished it while we waited
                _download_all(client, url, bucket, objects, final, single_name)
    return final / single_name if single_name else final


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_all(client: Any, url: str, bucket: str, objects: list[S3Object], final: Path, single_name: str | None) -> None:
    staging = final.with_suffix(".partial")  # kept between attempts: a retry resumes it
    for obj in objects:
        target = staging / (obj.relative or str(single_name))
        if target.is_file() and target.stat().st_size == obj.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with _s3_errors(url):
            _download(client, bucket, obj, target)
    for item in staging.rglob("*"):
        if item.is_file():
            item.chmod(0o444)
    os.rename(staging, final)
    log.info("fetched %s (%d objects) into %s", url, len(objects), final)


def _download(client: Any, bucket: str, obj: S3Object, target: Path) -> None:
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if offset > obj.size:
        part.unlink()
        offset = 0
    digest = hashlib.md5(usedforsecurity=False)
    if offset:
        log.info("resuming s3://%s/%s at byte %d of %d", bucket, obj.key, offset, obj.size)
        with open(part, "rb") as existing:
            while chunk := existing.read(CHUNK):
                digest.update(chunk)
    if offset < obj.size:
        # IfMatch: resume only the object we started; a replaced one fails, and is listed anew next time.
        reply = client.get_object(Bucket=bucket, Key=obj.key, IfMatch=f'"{obj.etag}"', Range=f"bytes={offset}-")
        with open(part, "ab") as out:
            for chunk in reply["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    size = part.stat().st_size
    single_part = "-" not in obj.etag  # a multipart ETag is not the MD5 of the content
    if size != obj.size or (single_part and digest.hexdigest() != obj.etag):
        part.unlink()
        raise ModelLoadError(
            f"source s3://{bucket}/{obj.key}: corrupt download ({size} bytes, expected {obj.size}"
            f"{', checksum mismatch' if size == obj.size else ''}); the partial file was removed, a retry starts afresh"
        )
    os.rename(part, target)
