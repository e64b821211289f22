"""Where a notebook's server runs, per cluster backend, behind one small interface and a registry.

`job_fields` says what the notebook's job runs; `locate` finds the server's http://host:port once
the job runs (None: not yet); `stop` cleans up what the job's own end does not. The simulator runs
no jobs, so its launcher starts a real `jupyter server` (or code-server) on this machine for each
running session.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings

from cluster.backends import get_backend
from cluster.backends.base import BackendError, BackendRejected
from cluster.backends.kubernetes import manifests
from cluster.backends.kubernetes.backend import KubernetesBackend
from jobs import services as job_services
from jobs.models import Job
from notebooks import launch
from notebooks.models import Notebook

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


class LaunchFailed(Exception):
    """The backend refused what the server needs (retrying cannot help): the notebook fails with this message."""


class Launcher(abc.ABC):
    """How one backend's nodes start, find and stop notebook servers."""

    @abc.abstractmethod
    def job_fields(self, server_type: str) -> dict[str, Any]:
        """The job submission's fields that make it start the server (command, script, image)."""

    @abc.abstractmethod
    def locate(self, notebook: Notebook, job: Job, token: str) -> tuple[str, int | None] | None:
        """(server URL, local pid or None) once the running job's server has an address; None before."""

    def stop(self, notebook: Notebook) -> None:
        """What to clean up once the notebook's job has ended (its server dies with the job)."""
        return None


class LocalLauncher(Launcher):
    """The simulator's stand-in: a real Jupyter server (or code-server, NOTEBOOK_CODE_SERVER) on this machine,
    bound to the loopback address."""

    def job_fields(self, server_type: str) -> dict[str, Any]:
        # shown on the job page; the simulator runs nothing itself
        return {"command": [launch.CODE_SERVER] if server_type == launch.CODE_SERVER else ["jupyter", "server"]}

    def locate(self, notebook: Notebook, job: Job, token: str) -> tuple[str, int | None] | None:
        if notebook.server_url:
            return notebook.server_url, notebook.server_pid
        port, work = free_port(), work_dir(notebook.pk)
        (work / "root").mkdir(parents=True, exist_ok=True)
        argv, env = self._server(notebook, port, work, token)
        with open(work / "server.log", "ab") as log_file:
            # Its own session: it outlives the request or task that started it, until the notebook ends.
            process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        return f"http://{LOOPBACK}:{port}", process.pid

    @staticmethod
    def _server(notebook: Notebook, port: int, work: Path, token: str) -> tuple[list[str], dict[str, str]]:
        if notebook.server_type == launch.CODE_SERVER:
            program = settings.NOTEBOOK_CODE_SERVER
            if shutil.which(shlex.split(program)[0]) is None:
                raise LaunchFailed(f"code-server is not installed on the portal's machine (NOTEBOOK_CODE_SERVER={program!r})")
            argv = launch.code_server_argv(LOOPBACK, port, str(work), str(work / "root"), program)
            return argv, {**os.environ, launch.HASHED_PASSWORD_ENV: launch.hashed_password(token)}
        env = {
            **os.environ, launch.TOKEN_ENV: token, "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "JUPYTER_DATA_DIR": str(work / "data"), "IPYTHONDIR": str(work / "ipython"),
        }  # fmt: skip
        argv = launch.jupyter_argv(sys.executable, LOOPBACK, port, launch.base_url(notebook.pk), str(work / "root"))
        argv.append("--ServerApp.allow_root=True")  # the portal's own machine may run it as root (containers, CI)
        return argv, env

    def stop(self, notebook: Notebook) -> None:
        if notebook.server_pid:
            stop_local_server(notebook.server_pid, notebook.pk)


class SlurmLauncher(Launcher):
    """A batch script starts the server on the node and prints its host:port to the job's log."""

    def job_fields(self, server_type: str) -> dict[str, Any]:
        return {
            "script": launch.slurm_script(
                server_type, settings.NOTEBOOK_NODE_PYTHON, settings.NOTEBOOK_NODE_HOST, settings.NOTEBOOK_CODE_SERVER
            )
        }

    def locate(self, notebook: Notebook, job: Job, token: str) -> tuple[str, int | None] | None:
        found = launch.parse_address(job_services.read_log(job, 0, 50))
        return None if found is None else (f"http://{found[0]}:{found[1]}", None)


class KubernetesLauncher(Launcher):
    """The job's pod runs the server; a ClusterIP Service in the team's namespace reaches it (notebooks.launch).

    The Service is made once the job runs and deleted when the notebook ends; it is owned by the
    job's object, so the cluster's garbage collector removes it with the job if the delete is missed.
    """

    def job_fields(self, server_type: str) -> dict[str, Any]:
        image = settings.NOTEBOOK_CODE_SERVER_IMAGE if server_type == launch.CODE_SERVER else settings.NOTEBOOK_IMAGE
        return {"image": image, "command": launch.kube_command(server_type)}

    def locate(self, notebook: Notebook, job: Job, token: str) -> tuple[str, int | None] | None:
        backend = kubernetes()
        namespace = manifests.namespace_for(job.team.slug, backend.options.manifest)
        service = launch.kube_service(notebook.pk, job.pk, namespace, manifests.JOB_ID_LABEL)
        try:
            backend.ensure_service(service, job.backend_job_id)
        except BackendRejected as exc:
            raise LaunchFailed(f"the notebook's Service was refused: {exc}") from exc
        except BackendError as exc:
            log.warning("notebook %s: Service not made yet, tried again on the next refresh: %s", notebook.pk, exc)
            return None
        return launch.kube_url(notebook.pk, namespace), None

    def stop(self, notebook: Notebook) -> None:
        if not notebook.job.backend_job_id:
            return  # never dispatched: no Service was made
        backend = kubernetes()
        namespace = manifests.namespace_for(notebook.job.team.slug, backend.options.manifest)
        try:
            backend.delete_service(namespace, launch.kube_service_name(notebook.pk))
        except BackendError as exc:  # the garbage collector removes it with the job's object
            log.warning("notebook %s: Service not deleted, left to the job's garbage collection: %s", notebook.pk, exc)


def kubernetes() -> KubernetesBackend:
    backend = get_backend("kubernetes")
    assert isinstance(backend, KubernetesBackend)  # the registry's entry for the name
    return backend


LAUNCHERS: dict[str, type[Launcher]] = {
    "simulator": LocalLauncher,
    "slurm": SlurmLauncher,
    "kubernetes": KubernetesLauncher,
    "slurm+kubernetes": KubernetesLauncher,  # a notebook has an image and no script: the shared nodes' Kubernetes runs it
}


def launcher_for(backend: str) -> Launcher:
    return LAUNCHERS.get(backend or settings.CLUSTER_BACKEND, LocalLauncher)()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def work_dir(notebook_id: int) -> Path:
    """The local server's own directory (its root, state and log); its command line names it."""
    return Path(settings.NOTEBOOK_WORK_DIR) / f"notebook-{notebook_id}"


def stop_local_server(pid: int, notebook_id: int) -> bool:
    """Stop the local server with this pid, only if it is still this notebook's (pids are reused)."""
    marker = f"{work_dir(notebook_id)}/"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if marker not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)  # the server and its kernels (it leads its own session)
    return True
