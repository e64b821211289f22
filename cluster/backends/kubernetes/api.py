"""The only module that imports the `kubernetes` client: connection, calls, error translation.

Importing the client costs about half a second, so the backend imports this module on first
use rather than at Django start-up. Every call goes through `KubeApi.call`, which turns client
and network errors into the portal's BackendErrors and model objects into plain dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from cluster.backends.base import BackendUnavailable
from cluster.backends.kubernetes.errors import from_status, parse_status, unreachable

STRICT = "Strict"  # reject unknown fields instead of silently dropping them


@dataclass(frozen=True)
class Connection:
    """Where the API server is: a kubeconfig (path, context) or the pod's service account."""

    kubeconfig: str = ""
    context: str = ""
    in_cluster: bool = False
    timeout_s: float = 10.0


def load_configuration(connection: Connection) -> client.Configuration:
    """A client Configuration from the kubeconfig or the in-cluster service account.

    A missing or broken configuration is reported as unavailable (retryable): jobs then wait
    for an operator to fix it instead of failing one by one.
    """
    configuration = client.Configuration()
    try:
        if connection.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=connection.kubeconfig or None,
                context=connection.context or None,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError) as exc:
        source = (
            "the in-cluster service account"
            if connection.in_cluster
            else f"kubeconfig {connection.kubeconfig or '~/.kube/config'}"
        )
        raise BackendUnavailable(f"cannot load the Kubernetes configuration from {source}: {exc}") from exc
    return configuration


class KubeApi:
    """Thin typed access to the API groups the backend uses; errors become BackendErrors."""

    def __init__(self, configuration: client.Configuration, timeout_s: float = 10.0) -> None:
        # One attempt per call: the callers (Celery tasks, sync cycles) own retrying, and a
        # down API server should be reported in seconds, not after urllib3's silent retries.
        configuration.retries = False
        self.host = str(configuration.host)
        self.timeout_s = timeout_s
        self.client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)
        self.version_api = client.VersionApi(self.client)

    def close(self) -> None:
        self.client.close()

    def call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call and return its answer as plain JSON-like data."""
        kwargs.setdefault("_request_timeout", self.timeout_s)
        try:
            result = fn(*args, **kwargs)
        except ApiException as exc:
            if not exc.status:
                raise unreachable(action, exc, self.host) from exc
            raise from_status(action, parse_status(exc.status, exc.body)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unreachable(action, exc, self.host) from exc
        return self.client.sanitize_for_serialization(result)

    def watch(self, action: str, fn: Callable[..., Any], timeout_s: int, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream (event type, object) pairs from a list call until `timeout_s` passes."""
        watcher = watch.Watch()
        try:
            for event in watcher.stream(fn, timeout_seconds=timeout_s, _request_timeout=timeout_s + 5, **kwargs):
                yield str(event["type"]), dict(event["raw_object"])
        except ApiException as exc:
            if not exc.status:
                raise unreachable(action, exc, self.host) from exc
            raise from_status(action, parse_status(exc.status, exc.body or exc.reason)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unreachable(action, exc, self.host) from exc
        finally:
            watcher.stop()

    def eviction(self, name: str, namespace: str) -> Any:
        """An Eviction body for the pod (the policy/v1 subresource the drain posts)."""
        return client.V1Eviction(
            api_version="policy/v1", kind="Eviction", metadata=client.V1ObjectMeta(name=name, namespace=namespace)
        )
