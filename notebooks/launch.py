"""How a notebook's server is started on each backend (pure: the argument lists, the batch script and the
Kubernetes Service are built from plain data; nothing here runs anything).

The server's one-time token travels in the job's environment as JUPYTER_TOKEN (never on a command
line, where `ps` would show it); Jupyter reads it from there. The server serves under the proxy's
own path (`base_url`), so the proxy forwards paths unchanged and every link the server writes
points back through the portal.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

TOKEN_ENV = "JUPYTER_TOKEN"
ADDRESS_MARK = "GRID_NOTEBOOK_ADDRESS"  # the batch script prints "GRID_NOTEBOOK_ADDRESS host:port" to its log
KUBE_PORT = 8888
ADDRESS_RE = re.compile(rf"^{ADDRESS_MARK} (?P<host>[A-Za-z0-9.:\[\]-]+):(?P<port>\d{{1,5}})$")


BASE_URL_ENV = "GRID_NOTEBOOK_BASE_URL"  # the proxy's path, given with the token (the job is made before its notebook)


def base_url(notebook_id: int) -> str:
    return f"/notebooks/{notebook_id}/proxy/"


def jupyter_argv(python: str, host: str, port: int | str, base: str, root_dir: str) -> list[str]:
    """`jupyter server` bound to host:port under the proxy's path, no browser, no port hunting."""
    return [
        python, "-m", "jupyter_server", "--no-browser",
        f"--ServerApp.ip={host}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base}", f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.allow_remote_access=True",
    ]  # fmt: skip


def code_server_argv(host: str, port: int | str) -> list[str]:
    """code-server bound to host:port; its password is the session token (PASSWORD in its environment)."""
    return ["code-server", "--bind-addr", f"{host}:{port}", "--auth", "password", "--disable-telemetry"]


def slurm_script(server_type: str, python: str, host: str) -> str:
    """A batch script that picks a free port on the node, prints its address to the log, and execs the server.

    `host` empty: the node's own name (`hostname -f`), which the portal must be able to reach.
    """
    workdir = '"${TMPDIR:-/tmp}/grid-notebook-${SLURM_JOB_ID:-$$}"'
    # The node's Python may be a command with arguments (`env PYTHONPATH=... python3`, a wrapper): each word quoted.
    python_words = " ".join(shlex.quote(word) for word in shlex.split(python))
    port_cmd = f"{python_words} -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])'"
    if server_type == "code-server":
        server = " ".join(shlex.quote(a) for a in code_server_argv("$HOST", "$PORT")).replace("'$HOST:$PORT'", '"$HOST:$PORT"')
        server = f'PASSWORD="${TOKEN_ENV}" {server}'
    else:
        argv = jupyter_argv("PYX", "HOSTX", "PORTX", "BASEX", "ROOTX")
        server = " ".join(shlex.quote(a) for a in argv).replace("PYX", python_words, 1)
        for mark, value in (("HOSTX", "$HOST"), ("PORTX", "$PORT"), ("BASEX", f"${BASE_URL_ENV}"), ("ROOTX", "$WORK")):
            server = server.replace(mark, f'"{value}"')
    return "\n".join(
        [
            "#!/bin/bash",
            f"# GPU Grid Portal notebook ({server_type}); the token and the proxy's path come in the environment",
            "set -euo pipefail",
            f"WORK={workdir}",
            'mkdir -p "$WORK" && chmod 700 "$WORK"',
            # Jupyter keeps its runtime files (and the kernels' connection files) in the private scratch directory.
            'export JUPYTER_RUNTIME_DIR="$WORK/runtime" JUPYTER_DATA_DIR="$WORK/data" IPYTHONDIR="$WORK/ipython"',
            f"HOST={shlex.quote(host)}" if host else "HOST=$(hostname -f)",
            f"PORT=$({port_cmd})",
            f'echo "{ADDRESS_MARK} $HOST:$PORT"',
            f"exec {server}",
            "",
        ]
    )


def parse_address(lines: list[str]) -> tuple[str, int] | None:
    """The host and port a batch script printed, or None before it has."""
    for line in lines:
        found = ADDRESS_RE.match(line.strip())
        if found and 0 < int(found["port"]) < 65536:
            return found["host"], int(found["port"])
    return None


def kube_command(server_type: str) -> list[str]:
    """The container's command on Kubernetes: the server on the pod's interfaces, on KUBE_PORT (a shell
    puts the proxy's path in from the environment)."""
    if server_type == "code-server":
        return code_server_argv("0.0.0.0", KUBE_PORT)
    argv = jupyter_argv("python", "0.0.0.0", KUBE_PORT, "BASEX", "/home/jovyan")
    line = " ".join(shlex.quote(a) for a in argv).replace("BASEX", f'"${BASE_URL_ENV}"')
    return ["sh", "-c", f"exec {line}"]


def kube_service_name(notebook_id: int) -> str:
    return f"notebook-{notebook_id}"


def kube_service(notebook_id: int, portal_job_id: int, namespace: str, job_id_label: str) -> dict[str, Any]:
    """A ClusterIP Service in the team's namespace selecting the job's pod: reachable inside the cluster
    (by the portal), never exposed outside it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": kube_service_name(notebook_id),
            "namespace": namespace,
            "labels": {job_id_label: str(portal_job_id), "app.kubernetes.io/component": "notebook"},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {job_id_label: str(portal_job_id)},
            "ports": [{"name": "http", "port": KUBE_PORT, "targetPort": KUBE_PORT, "protocol": "TCP"}],
        },
    }


def kube_url(notebook_id: int, namespace: str) -> str:
    return f"http://{kube_service_name(notebook_id)}.{namespace}.svc:{KUBE_PORT}"
