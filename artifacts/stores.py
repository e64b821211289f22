"""The artifact store behind a small interface: a path (local disk, NFS, Lustre, CephFS) or S3 through boto3.

Keys are `/`-separated names relative to the store's root (`vision/42/output/model.pt`); callers
check them with `artifacts.layout.clean_path` first, and the file store refuses any key that would
resolve outside its root all the same. Errors say whether a retry can help.
"""

from __future__ import annotations

import abc
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from portal.backup.targets import s3_errors

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
DELETE_BATCH = 1000  # S3's DeleteObjects limit


class StoreError(Exception):
    """A store call failed; `retryable` says whether trying again later can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class StoredFile:
    """One file in the store."""

    key: str
    size: int
    modified: datetime


class ArtifactStore(abc.ABC):
    """Put, list, open, delete, measure; and, where the store has them, pre-signed URLs."""

    kind: str = ""

    @abc.abstractmethod
    def put(self, key: str, data: IO[bytes]) -> None:
        """Store the bytes read from `data` under `key`, replacing what was there."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[StoredFile]:
        """Every file whose key starts with `prefix`, by key."""

    @abc.abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """The file's bytes; StoreError (not retryable) when there is no such file."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a file is stored under exactly this key."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every file under `prefix`; returns how many went."""

    def delete(self, key: str) -> None:
        """Delete the one file stored under exactly `key`; a missing one is no error."""
        raise NotImplementedError

    def usage(self, prefix: str) -> int:
        """Bytes stored under `prefix`."""
        return sum(f.size for f in self.list(prefix))

    def location(self, key: str) -> str:
        """What a job is told for this key: a path it can write to, or a URL."""
        raise NotImplementedError

    def upload_url(self, key: str, size: int, expires_s: int) -> str | None:
        """A pre-signed URL a job may PUT one file of `size` bytes to; None: the store is a mounted path."""
        return None

    def download_url(self, key: str, expires_s: int, filename: str) -> str | None:
        """A pre-signed URL to fetch the file; None: the portal serves the bytes itself."""
        return None


class FileStore(ArtifactStore):
    """A directory: local disk or any shared filesystem mounted at the same path on the nodes."""

    kind = "file"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        root = self.root.resolve()
        path = (root / key).resolve()
        if path != root and not path.is_relative_to(root):
            raise StoreError(f"{key!r} is outside the store", retryable=False)
        return path

    def location(self, key: str) -> str:
        return str(self.path(key))

    def put(self, key: str, data: IO[bytes]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with _os_errors(f"write {key}"), partial.open("wb") as out:
            shutil.copyfileobj(data, out)
        os.replace(partial, path)

    def list(self, prefix: str) -> list[StoredFile]:
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root.resolve()
        if not base.is_dir():
            return []
        root = self.root.resolve()
        found = []
        with _os_errors(f"list {prefix}"):
            for path in base.rglob("*"):
                if path.is_file() and not path.is_symlink() and not path.name.endswith(".partial"):
                    stat = path.stat()
                    modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                    found.append(StoredFile(path.relative_to(root).as_posix(), stat.st_size, modified))
        return sorted(found, key=lambda f: f.key)

    def open(self, key: str) -> IO[bytes]:
        path = self.path(key)
        if not path.is_file():
            raise StoreError(f"no file {key!r}", retryable=False)
        with _os_errors(f"open {key}"):
            return path.open("rb")

    def exists(self, key: str) -> bool:
        path = self.path(key)
        return path.is_file() and not path.name.endswith(".partial")

    def delete_prefix(self, prefix: str) -> int:
        base = self.path(prefix.rstrip("/"))
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        with _os_errors(f"delete {prefix}"):
            shutil.rmtree(base)
        return count

    def delete(self, key: str) -> None:
        with _os_errors(f"delete {key}"):
            self.path(key).unlink(missing_ok=True)


class S3Store(ArtifactStore):
    """A bucket (and a prefix in it) on S3 or any S3-compatible server (MinIO, Ceph RGW, moto)."""

    kind = "s3"

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client

    def _key(self, key: str) -> str:
        return self.prefix + key

    def location(self, key: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self._key(key)}"

    def put(self, key: str, data: IO[bytes]) -> None:
        with _s3_errors(f"write {key}"):
            self.client.upload_fileobj(data, self.bucket, self._key(key))

    def list(self, prefix: str) -> list[StoredFile]:
        found = []
        with _s3_errors(f"list {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    found.append(StoredFile(key, int(item["Size"]), item["LastModified"]))
        return sorted(found, key=lambda f: f.key)

    def open(self, key: str) -> IO[bytes]:
        from botocore.exceptions import ClientError

        try:
            body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise StoreError(f"no file {key!r}", retryable=False) from exc
            raise
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise StoreError(f"cannot look for {key}: {exc}", retryable=True) from exc
        return True

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(f.key) for f in self.list(prefix)]
        with _s3_errors(f"delete {prefix}"):
            for start in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def delete(self, key: str) -> None:
        with _s3_errors(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def upload_url(self, key: str, size: int, expires_s: int) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key), "ContentLength": size}
        with _s3_errors(f"sign an upload of {key}"):
            url: str = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)
        return url

    def download_url(self, key: str, expires_s: int, filename: str) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentDisposition": f'attachment; filename="{filename.replace(chr(34), "_")}"',
        }
        with _s3_errors(f"sign a download of {key}"):
            url: str = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        return url


@contextmanager
def _os_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {action}: {exc.strerror or exc}", retryable=True) from exc


def _s3_errors(action: str) -> AbstractContextManager[None]:
    """boto3's errors as StoreError, saying whether a retry can help."""
    return s3_errors(action, StoreError)


def s3_client(endpoint_url: str | None, region: str | None, key_id: str | None, key: str | None) -> Any:
    """A boto3 S3 client; without keys, boto3's own chain (environment, profile, instance role)."""
    import boto3  # only installations with an S3 store need it loaded
    from botocore.config import Config

    if bool(key_id) != bool(key):
        raise StoreError("set both ARTIFACT_S3_ACCESS_KEY_ID and ARTIFACT_S3_SECRET_ACCESS_KEY, or neither", retryable=False)
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=key or None,
        # Pages list a job's files while they render: a store that is away fails fast instead of hanging them.
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, signature_version="s3v4", connect_timeout=5, read_timeout=30
        ),
    )


def parse_store_url(url: str) -> tuple[str, str, str]:
    """(`file` or `s3`, the path or the bucket, the prefix) of ARTIFACT_STORE, or StoreError saying what is wrong."""
    if url.startswith(S3_SCHEME):
        parts = urlsplit(url)
        if not parts.netloc:
            raise StoreError(
                f"ARTIFACT_STORE={url!r}: an S3 store needs a bucket, e.g. s3://grid-artifacts/jobs", retryable=False
            )
        return "s3", parts.netloc, parts.path.strip("/")
    path = url.removeprefix(FILE_SCHEME)
    if not path.startswith("/"):
        raise StoreError(
            f"ARTIFACT_STORE={url!r}: must be file:///absolute/path, an absolute path, or s3://bucket/prefix", retryable=False
        )
    return "file", path, ""


def open_store(
    url: str, *, endpoint_url: str | None = None, region: str | None = None, key_id: str | None = None, key: str | None = None
) -> ArtifactStore:
    kind, where, prefix = parse_store_url(url)
    if kind == "s3":
        return S3Store(where, prefix, s3_client(endpoint_url, region, key_id, key))
    return FileStore(Path(where))
