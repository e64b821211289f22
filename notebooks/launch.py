"""How a notebook's server is started on each backend (pure: the argument lists, the batch script and the
Kubernetes Service are built from plain data; nothing here runs anything).

The server's one-time token travels in the job's environment as JUPYTER_TOKEN (never on a command
line, where `ps` would show it); Jupyter reads it from there. The server serves under the proxy's
own path (`base_url`), so the proxy forwards paths unchanged and every link the server writes
points back through the portal.

code-server gets HASHED_PASSWORD, the token's SHA-256: with a SHA-256 hashed password it takes a
session cookie (`code-server-session`) equal to that hash, which the proxy adds to each request
(code-server takes no token header). It serves at its root with relative links only, so the proxy
strips its own path before forwarding. Its activity is its heartbeat (`/healthz`: `lastHeartbeat`,
in ms), which it keeps beating while a browser holds a connection to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime

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


HASHED_PASSWORD_ENV = "HASHED_PASSWORD"
CODE_SERVER = "code-server"
CODE_SERVER_COOKIE = "code-server-session"


def hashed_password(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def code_server_argv(host: str, port: int | str, data_dir: str, folder: str, program: str = CODE_SERVER) -> list[str]:
    """code-server bound to host:port, its state in `data_dir`, opening `folder`; its password comes from
    HASHED_PASSWORD in its environment. `program`: a command, words split like a shell's."""
    return [
        *shlex.split(program), "--bind-addr", f"{host}:{port}", "--auth", "password", "--disable-telemetry",
        "--disable-update-check", "--user-data-dir", f"{data_dir}/data", "--extensions-dir", f"{data_dir}/extensions",
        folder,
    ]  # fmt: skip


def upstream_path(server_type: str, notebook_id: int, path: str) -> str:
    """The path to ask the server for, given the portal's path (Jupyter serves under the proxy's path, code-server at its root)."""
    if server_type == CODE_SERVER:
        return "/" + path.removeprefix(base_url(notebook_id))
    return path


def upstream_auth(server_type: str, token: str) -> dict[str, str]:
    """The header that lets the proxy in: Jupyter's token, or code-server's session cookie."""
    if server_type == CODE_SERVER:
        return {"Cookie": f"{CODE_SERVER_COOKIE}={hashed_password(token)}"}
    return {"Authorization": f"token {token}"}


def status_path(server_type: str, notebook_id: int) -> str:
    """Where the server says it is up and when it was last used (Jupyter's api/status, code-server's healthz)."""
    return "/healthz" if server_type == CODE_SERVER else f"{base_url(notebook_id)}api/status"


def last_activity(server_type: str, answer: Any) -> datetime | None:
    """The last activity in a status answer: Jupyter's `last_activity` (ISO 8601), code-server's `lastHeartbeat` (ms)."""
    if not isinstance(answer, dict):
        return None
    if server_type == CODE_SERVER:
        beat = answer.get("lastHeartbeat")
        if isinstance(beat, int | float) and not isinstance(beat, bool) and beat > 0:
            return datetime.fromtimestamp(beat / 1000, tz=UTC)
        return None
    with contextlib.suppress(ValueError, TypeError):
        return parse_datetime(str(answer.get("last_activity") or ""))
    return None


def slurm_script(server_type: str, python: str, host: str, code_server: str = CODE_SERVER) -> str:
    """A batch script that picks a free port on the node, prints its address to the log, and execs the server.

    `host` empty: the node's own name (`hostname -f`), which the portal must be able to reach.
    `code_server`: the code-server command on the nodes.
    """
    workdir = '"${TMPDIR:-/tmp}/grid-notebook-${SLURM_JOB_ID:-$$}"'
    # The node's Python may be a command with arguments (`env PYTHONPATH=... python3`, a wrapper): each word quoted.
    python_words = " ".join(shlex.quote(word) for word in shlex.split(python))
    port_cmd = f"{python_words} -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])'"
    if server_type == CODE_SERVER:
        argv = code_server_argv("HOSTX", "PORTX", "WORKX", "WORKX/root", "PROGX")
        server = " ".join(shlex.quote(a) for a in argv)
        server = server.replace("PROGX", " ".join(shlex.quote(w) for w in shlex.split(code_server)), 1)
        server = server.replace("HOSTX:PORTX", '"$HOST:$PORT"').replace("WORKX", '"$WORK"')
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
            'mkdir -p "$WORK/root" && chmod 700 "$WORK"',
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
    if server_type == CODE_SERVER:
        return code_server_argv("0.0.0.0", KUBE_PORT, "/home/coder/.local/share/code-server", "/home/coder")
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
