"""A pytest plugin (`-p tests.deploy.record_k8s_requests`): every request the fake API server saw, to a file.

The RBAC test runs the Kubernetes backend's own tests with it, so the API calls it checks the
deployment's RBAC against come from the backend exercising its paths, not from a list kept by
hand. Each line of `$K8S_REQUEST_LOG` is one `METHOD path?query`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.k8s.fake_apiserver import FakeApiServer


@pytest.fixture(autouse=True)
def _record_fake_apiserver_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    target = os.environ.get("K8S_REQUEST_LOG")
    original = FakeApiServer.stop

    def stop_and_record(self: FakeApiServer) -> None:
        original(self)
        if target:
            with open(target, "a", encoding="utf-8") as handle:
                handle.writelines(f"{method} {path}\n" for method, path in self.store.requests)

    monkeypatch.setattr(FakeApiServer, "stop", stop_and_record)
    yield
