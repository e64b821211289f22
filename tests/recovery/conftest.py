"""Recovery on the directory store and on moto's S3 server (the artifact tests' fixtures), with a replica bucket."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pytest_django import Settings

from artifacts.stores import s3_client
from tests.artifacts.conftest import (  # noqa: F401  (fixtures shared with the artifact tests)
    KEY,
    KEY_ID,
    backend,
    clock,
    file_store,
    fresh_store_cache,
    moto_url,
    put,
    s3_store,
)

_replicas = itertools.count(1)


@pytest.fixture
def replica(settings: Settings, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    """RECOVERY_REPLICA is a fresh bucket on moto's S3 server; returns a client for looking inside it."""
    monkeypatch.setenv("RECOVERY_S3_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("RECOVERY_S3_SECRET_ACCESS_KEY", KEY)
    bucket = f"grid-recovery-{next(_replicas)}"
    client = s3_client(moto_url, "us-east-1", KEY_ID, KEY)
    client.create_bucket(Bucket=bucket)
    settings.RECOVERY_REPLICA = f"s3://{bucket}/nightly"
    settings.RECOVERY_S3_ENDPOINT_URL = moto_url
    settings.RECOVERY_S3_REGION = "us-east-1"
    client.bucket = bucket
    return client


def replica_keys(client: Any) -> list[str]:
    listing = client.list_objects_v2(Bucket=client.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))
