"""Benchmark: the Kubernetes backend's `list_jobs` for N running Volcano Jobs against the fake API server
(tests/k8s/fake_apiserver.py, real HTTP and the real client), with the pods listing that brings nodes
and exit codes back, against the same call without it (the bare reference), in the same process.

    flock /tmp/bench.lock .venv/bin/python -m bench.k8s_list_jobs 100

Prints one JSON object as its last line (median of 15 calls each).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from cluster.backends.base import JobRequest  # noqa: E402 - after django.setup()
from cluster.backends.kubernetes import status  # noqa: E402
from cluster.backends.kubernetes.backend import KubernetesBackend, KubeSettings  # noqa: E402
from tests.k8s.conftest import connect  # noqa: E402
from tests.k8s.fake_apiserver import FakeApiServer  # noqa: E402

NS = "team-vision"


class WithoutPods(KubernetesBackend):
    """The backend as it was before jobs' pods were read: the bare reference."""

    def _pods_seen(self, portal_job_ids: list[int]) -> dict[int, status.PodsSeen]:
        return {}


def median_ms(backend: KubernetesBackend, ids: list[int], with_nodes: bool) -> float:
    times = []
    for _ in range(15):
        start = time.perf_counter()
        found = backend.list_jobs(ids)
        times.append(time.perf_counter() - start)
        assert len(found) == len(ids) and all(bool(f.node_names) == with_nodes for f in found)
    return statistics.median(times) * 1000


def main(jobs: int) -> dict[str, float]:
    fake = FakeApiServer().start()
    fake.add_namespace(NS)
    api = connect(fake.url, 30)
    try:
        backend = KubernetesBackend(api, KubeSettings())
        for i in range(1, jobs + 1):
            request = JobRequest(i, "j", "simulation", "vision", "alice", "a100", 1, 1, (), 600, "busybox", ("true",))
            backend.submit(request)
            fake.run_pods("batch.volcano.sh", "jobs", NS, f"gp-{i}", [f"n{i % 8}"])
            fake.set_volcano_phase(NS, f"gp-{i}", "Running")
        ids = list(range(1, jobs + 1))
        bare = median_ms(WithoutPods(api, KubeSettings()), ids, with_nodes=False)
        with_pods = median_ms(backend, ids, with_nodes=True)
    finally:
        api.close()
        fake.stop()
    return {
        "jobs": jobs,
        "bare_list_jobs_ms": round(bare, 1),
        "with_pods_ms": round(with_pods, 1),
        "ratio": round(with_pods / bare, 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)))
