"""Where durable copies of images go (STORAGE_URL): a local directory (`file:///dir`) or an
S3-compatible bucket (`s3://bucket/prefix`, through boto3: the standard AWS credential chain,
STORAGE_ENDPOINT_URL for any S3-compatible server).

An object's key is the caller's (`worker.flow.copies`: tenant, job id, image index), so a copy
redone after a crash writes the same object. `find` reads what is there (its sha256 is kept with
it: S3 metadata, or a `.sha256` file beside it); `put` writes it whole or not at all (a temporary
file renamed into place; one PUT).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from worker.errors import ConfigError


@dataclass(frozen=True)
class StoredObject:
    """One stored copy, as the outcome's `stored` lists it."""

    url: str  #: where to read it: a presigned GET (S3), or a file:// URL
    key: str
    sha256: str
    bytes: int
    content_type: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Storage(Protocol):
    def find(self, key: str) -> StoredObject | None:
        """The object under `key`, when it is there whole."""

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...


class FileStorage:
    """A directory: `<dir>/<key>`, and its sha256 in `<dir>/<key>.sha256` (written last)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root.resolve()):
            raise ValueError(f"storage key {key!r} leaves the storage directory")
        return path

    def find(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            digest, content_type = path.with_name(path.name + ".sha256").read_text().split()
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        return StoredObject(path.as_uri(), key, digest, size, content_type)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_hex(data)
        for target, content in ((path, data), (path.with_name(path.name + ".sha256"),
                                               f"{digest} {content_type}\n".encode())):
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            partial.write_bytes(content)
            os.replace(partial, target)
        return StoredObject(path.as_uri(), key, digest, len(data), content_type)


class S3Storage:
    """A bucket and a key prefix; the sha256 in the object's metadata; URLs presigned GETs."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, ttl: int) -> None:
        import boto3  # only where copies go to S3 (the `s3` extra)
        from botocore.config import Config

        self._bucket, self._prefix, self._ttl = bucket, prefix, ttl
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, config=Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30,
            max_pool_connections=64))

    def _url(self, key: str) -> str:
        return str(self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=self._ttl))

    def find(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        full = self._prefix + key
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        digest = head.get("Metadata", {}).get("sha256")
        if not digest:
            return None
        return StoredObject(self._url(full), full, digest, int(head["ContentLength"]),
                            head.get("ContentType", "application/octet-stream"))

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        full, digest = self._prefix + key, sha256_hex(data)
        self._s3.put_object(Bucket=self._bucket, Key=full, Body=data, ContentType=content_type,
                            Metadata={"sha256": digest})
        return StoredObject(self._url(full), full, digest, len(data), content_type)


def open_storage(url: str, endpoint_url: str | None, ttl: int) -> Storage:
    """The storage STORAGE_URL names."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileStorage(Path(parts.path))
    if parts.scheme == "s3":
        prefix = parts.path.strip("/")
        return S3Storage(parts.netloc, prefix + "/" if prefix else "", endpoint_url, ttl)
    raise ConfigError(f"STORAGE_URL: {parts.scheme}:// is not file:// or s3://")
