"""Where backups are kept: a local directory or an S3-compatible bucket, behind one small interface.

A target stores files under keys such as `backup-20260101T013000Z/database.dump`. It knows nothing
about what a backup is; completeness (the manifest, written last) is decided in `service`.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from portal.env import env_str

S3_SCHEME = "s3://"


class TargetError(Exception):
    """A target could not be read or written; `retryable` says whether trying again later can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Target(ABC):
    """A place that stores files by key; `location` is how operators name it (a path or s3:// URL)."""

    location: str

    @abstractmethod
    def put(self, key: str, source: Path) -> None:
        """Store the local file `source` under `key`, replacing what was there."""

    @abstractmethod
    def get(self, key: str, dest: Path) -> None:
        """Copy what is stored under `key` into the local file `dest`."""

    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key starting with `prefix`, sorted."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove these keys; missing ones are ignored."""

    def groups(self) -> dict[str, set[str]]:
        """Keys grouped by their first path component (a backup's name) -> the names inside it."""
        grouped: dict[str, set[str]] = {}
        for key in self.keys():
            head, _, rest = key.partition("/")
            if rest:
                grouped.setdefault(head, set()).add(rest)
        return grouped


class LocalDirectory(Target):
    """Backups in a directory on this machine (or a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise TargetError(f"{key!r} is outside the backup directory {self.root}", retryable=False)
        return path

    def put(self, key: str, source: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        try:
            shutil.copyfile(source, partial)
            with partial.open("rb") as handle:
                os.fsync(handle.fileno())  # on disk before it gets its final name
            partial.replace(dest)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise TargetError(f"cannot write {dest}: {exc.strerror or exc}", retryable=False) from exc

    def get(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except OSError as exc:
            raise TargetError(f"cannot read {self._path(key)}: {exc.strerror or exc}", retryable=False) from exc

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and not k.endswith(".partial"))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            for parent in path.parents:
                if parent == self.root.resolve() or any(parent.iterdir()):
                    break
                parent.rmdir()  # a backup's folder goes once its last file has


class S3Bucket(Target):
    """Backups in an S3-compatible bucket (AWS, MinIO, Ceph RGW, ...) under an optional prefix."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client
        self.location = f"{S3_SCHEME}{bucket}/{self.prefix}"

    def put(self, key: str, source: Path) -> None:
        with s3_errors(f"upload {self.location}{key}"):
            self.client.upload_file(str(source), self.bucket, self.prefix + key)

    def get(self, key: str, dest: Path) -> None:
        with s3_errors(f"download {self.location}{key}"):
            self.client.download_file(self.bucket, self.prefix + key, str(dest))

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        with s3_errors(f"list {self.location}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(found)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            objects = [{"Key": self.prefix + key} for key in keys[start : start + 1000]]
            with s3_errors(f"delete from {self.location}"):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})


@contextmanager
def s3_errors(action: str, error: Callable[..., Exception] = TargetError) -> Iterator[None]:
    """Turn boto3's errors into `error(message, retryable=...)` (TargetError here; the artifact store
    passes its own), saying whether a retry can help."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        retryable = code in {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
        raise error(f"cannot {action}: {exc}", retryable=retryable) from exc
    except BotoCoreError as exc:
        retryable = isinstance(exc, ConnectionError) and not isinstance(exc, NoCredentialsError)
        raise error(f"cannot {action}: {exc}", retryable=retryable) from exc


def secret(name: str) -> str | None:
    """A secret from the variable NAME, or from the file named by NAME_FILE (a mounted secret)."""
    value = env_str(name)
    file = env_str(f"{name}_FILE")
    if value and file:
        raise TargetError(f"set {name} or {name}_FILE, not both", retryable=False)
    if file:
        try:
            return Path(file).read_text().strip() or None
        except OSError as exc:
            raise TargetError(f"{name}_FILE={file!r}: {exc.strerror or exc}", retryable=False) from exc
    return value


def s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client; keys from BACKUP_S3_ACCESS_KEY_ID/SECRET_ACCESS_KEY (or *_FILE), else boto3's own chain."""
    import boto3  # imported here: only installations that back up to S3 need it loaded
    from botocore.config import Config

    key_id, key = secret("BACKUP_S3_ACCESS_KEY_ID"), secret("BACKUP_S3_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(key):
        raise TargetError("set both BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY, or neither", retryable=False)
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=key_id,
        aws_secret_access_key=key,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def open_target(location: str, *, endpoint_url: str | None = None, region: str | None = None) -> Target:
    """`s3://bucket/prefix` or a directory path."""
    if location.startswith(S3_SCHEME):
        parts = urlsplit(location)
        if not parts.netloc:
            raise TargetError(f"{location!r}: an S3 target needs a bucket, e.g. s3://portal-backups/nightly", retryable=False)
        return S3Bucket(parts.netloc, parts.path, s3_client(endpoint_url, region))
    if not location:
        raise TargetError("no backup target: set BACKUP_TARGET or pass --target", retryable=False)
    return LocalDirectory(Path(location).expanduser())
