"""Which node a series is about, where the exporter names itself instead.

dcgm-exporter run by the NVIDIA GPU Operator is a DaemonSet whose `Hostname` label is the exporter
pod's own name (`nvidia-dcgm-exporter-xpn6b`). Prometheus usually adds the node when it scrapes the
DaemonSet (`__meta_kubernetes_pod_node_name` relabelled to `node` or `kubernetes_node`, as the
shipped config does); names.host_labels looks for those first. Where that relabelling is missing,
`HostResolver` maps the exporter pod's name to its `spec.nodeName`, asked of the cluster backend
(cached), and rewrites the row's host label. A series whose host is neither a known node nor a
known exporter is left out (it must never cordon anything) and counted, so /metrics and the
dashboard can say so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from cluster.telemetry.names import MetricNames

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
KnownNodes = Callable[[], set[str]]
ExporterNodes = Callable[[Collection[str]], dict[str, str]]

KNOWN_TTL_S = 60.0  # the portal's node list, read again this often (or at once for a name not in it)
KNOWN_RETRY_S = 1.0  # ...at most this often
EXPORTER_TTL_S = 600.0  # an exporter pod's node does not change while the pod lives
EXPORTER_RETRY_S = 30.0  # a name the backend did not know is asked again after this


def _portal_nodes() -> set[str]:
    from cluster.models import Node  # imported on use: the settings load this package before the apps

    return set(Node.objects.values_list("name", flat=True))


def _backend_exporters(names: Collection[str]) -> dict[str, str]:
    from cluster.backends import BackendError, get_backend

    try:
        return get_backend().exporter_nodes(names)
    except BackendError as exc:
        log.warning("could not ask the cluster where exporters %s run: %s", ", ".join(sorted(names)[:5]), exc)
        return {}


class HostResolver:
    """Rows of a Prometheus answer with their host resolved to a portal node; see the module's docstring."""

    def __init__(
        self,
        names: MetricNames,
        known: KnownNodes = _portal_nodes,
        exporters: ExporterNodes = _backend_exporters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = names
        self._known_source, self._exporters_source, self._clock = known, exporters, clock
        self._known: set[str] = set()
        self._known_at = -float("inf")
        self._exporter_node: dict[str, tuple[str, float]] = {}  # exporter name -> (node, when learnt)
        self._missed: dict[str, float] = {}  # names the backend did not know -> when asked
        self._unresolved: dict[str, int] = {}  # exporter name -> series left out, since last taken
        self._lock = threading.Lock()

    def resolve(self, rows: Iterable[dict[str, Any]]) -> Rows:
        """The rows whose host is a known node, or an exporter whose node is known (its host label then
        names the node); the others are left out and counted. Rows without a host label stay as they are."""
        rows = list(rows)
        host = self.names.host
        with self._lock:
            known = self._known_nodes()
            strangers = {h for r in rows if (h := host(r.get("metric", {}))) is not None and h not in known}
            if not strangers:
                return rows
            known = self._known_nodes(refresh=True)
            mapping = self._exporter_nodes(strangers - known)
            label = self.names.host_labels[0]
            out: Rows = []
            for row in rows:
                metric = row.get("metric", {})
                name = host(metric)
                if name is None or name in known:
                    out.append(row)
                elif (node := mapping.get(name)) is not None:
                    row["metric"] = {**metric, label: node}
                    out.append(row)
                else:
                    self._unresolved[name] = self._unresolved.get(name, 0) + 1
            return out

    def aliases(self, nodes: Iterable[str]) -> list[str]:
        """The exporter names known to report for these nodes (to ask Prometheus for a node's raw series)."""
        wanted = set(nodes)
        with self._lock:
            return sorted(name for name, (node, _) in self._exporter_node.items() if node in wanted)

    def left_out(self) -> dict[str, int]:
        """Series left out since the last `take_unresolved`, per host name they gave (the counts stay)."""
        with self._lock:
            return dict(self._unresolved)

    def take_unresolved(self) -> dict[str, int]:
        """Series left out since the last call, per host name they gave; the counts start again."""
        with self._lock:
            taken, self._unresolved = self._unresolved, {}
            return taken

    def _known_nodes(self, refresh: bool = False) -> set[str]:
        now = self._clock()
        age = now - self._known_at
        if age > KNOWN_TTL_S or (refresh and age > KNOWN_RETRY_S):
            self._known, self._known_at = self._known_source(), now
        return self._known

    def _exporter_nodes(self, names: set[str]) -> dict[str, str]:
        now = self._clock()
        fresh = {n: node for n, (node, at) in self._exporter_node.items() if n in names and now - at <= EXPORTER_TTL_S}
        ask = {n for n in names - fresh.keys() if now - self._missed.get(n, -float("inf")) > EXPORTER_RETRY_S}
        if ask:
            found = self._exporters_source(sorted(ask))
            for name in ask:
                if name in found:
                    self._exporter_node[name] = (found[name], now)
                    self._missed.pop(name, None)
                    fresh[name] = found[name]
                else:
                    self._missed[name] = now
        # A pod the backend no longer knows may still have samples in flight: keep its last answer.
        for name in names - fresh.keys():
            if name in self._exporter_node:
                fresh[name] = self._exporter_node[name][0]
        return fresh
