"""code-server as a second session kind: started on each backend, reached through the same proxy (its
session cookie made from the token, the proxy's path stripped), culled by its heartbeat and the GPUs.

On the simulator the tests run tests/notebooks/fake_code_server.py as NOTEBOOK_CODE_SERVER: a test
double of code-server's HTTP surface (code-server needs Node 24, which these machines lack)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from cluster.backends.kubernetes.manifests import ManifestConfig, volcano_job
from cluster.simulator.backend import SimulatorBackend
from grid.asgi import application
from jobs import services as job_services
from jobs.spec import SpecError
from notebooks import culling, launch, services
from notebooks.models import Notebook
from notebooks.states import EndReason, NotebookState
from portal.models import User
from tests.k8s.fake_apiserver import FakeApiServer
from tests.k8s.test_manifests import K8S_VERSION, pods_of
from tests.notebooks.conftest import notebook_request, run_jobs
from tests.notebooks.test_kubernetes import NS, answering, running_on_fake

FAKE = Path(__file__).with_name("fake_code_server.py")
ORIGIN = "http://testserver"
CODE = {"server_type": "code-server"}


@pytest.fixture(autouse=True)
def fake_code_server(settings: Settings) -> None:
    settings.NOTEBOOK_CODE_SERVER = f"{sys.executable} {FAKE}"


# --- what each backend runs ----------------------------------------------------------------------


def test_its_job_gets_the_hashed_token_and_never_the_token(grid: SimulatorBackend, alice: User) -> None:
    notebook = services.start(alice, notebook_request(**CODE))
    env = services.job_environment(notebook.job)
    token = services.token_for(notebook)
    assert env[launch.HASHED_PASSWORD_ENV] == launch.hashed_password(token) and launch.TOKEN_ENV not in env
    assert token not in str(notebook.job.command) and notebook.job.command == ["code-server"]


def test_the_slurm_script_execs_code_server_on_the_port_it_reports(settings: Settings, tmp_path: Path) -> None:
    script = launch.slurm_script("code-server", "python3", "", "/opt/code-server/bin/code-server")
    lines = script.splitlines()
    assert lines[-1].startswith('exec /opt/code-server/bin/code-server --bind-addr "$HOST:$PORT" --auth password')
    assert lines[-1].endswith('"$WORK"/root') and f'echo "{launch.ADDRESS_MARK} $HOST:$PORT"' in lines
    assert "PASSWORD" not in script  # HASHED_PASSWORD comes in the job's environment, never in the script
    (tmp_path / "job.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")], check=False).returncode == 0


def test_on_kubernetes_the_pod_runs_the_code_server_image_on_the_services_port(
    grid: SimulatorBackend, alice: User, settings: Settings
) -> None:
    settings.CLUSTER_BACKEND = "kubernetes"
    notebook = services.start(alice, notebook_request(**CODE))
    request = job_services.job_request(notebook.job)
    [pod] = pods_of(volcano_job(request, ManifestConfig()))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["image"] == settings.NOTEBOOK_CODE_SERVER_IMAGE
    assert container["command"][:3] == ["code-server", "--bind-addr", f"0.0.0.0:{launch.KUBE_PORT}"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[launch.HASHED_PASSWORD_ENV] == launch.hashed_password(services.token_for(notebook))


def test_on_the_fake_api_server_it_gets_its_service_and_stopping_deletes_it(
    grid: SimulatorBackend, portal_on_fake: FakeApiServer, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook, _ = running_on_fake(portal_on_fake, alice, **CODE)
    answering(monkeypatch)
    assert services.refresh(notebook.pk) == NotebookState.READY
    assert portal_on_fake.get("", "services", NS, f"notebook-{notebook.pk}") is not None
    services.stop(alice, notebook)
    assert portal_on_fake.get("", "services", NS, f"notebook-{notebook.pk}") is None


# --- the simulator's stand-in, through the proxy -----------------------------------------------------


def test_the_owner_reaches_it_through_the_proxy_and_others_are_refused(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User, bob: User, carol: User
) -> None:
    notebook = start_ready(**CODE)
    page = web(alice).get(f"{notebook.proxy_path}some/file.txt")
    assert page.status_code == 200, page.content[:300]
    text = page.content.decode()
    assert "<p id='path'>/some/file.txt</p>" in text  # the proxy's own path stripped: code-server serves at its root
    assert launch.hashed_password(services.token_for(notebook)) not in text and "Set-Cookie" not in page
    for outsider in (bob, carol):
        assert web(outsider).get(notebook.proxy_path).status_code == 404
    # Without the portal the server lets nobody in: no session cookie, the login page.
    assert httpx.get(f"{notebook.server_url}/", follow_redirects=False).status_code == 302


def test_its_heartbeat_is_its_activity_and_an_idle_one_is_warned(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User, settings: Settings
) -> None:
    settings.NOTEBOOK_IDLE_S, settings.NOTEBOOK_WARN_S = 600, 60
    notebook = start_ready(**CODE)
    assert httpx.get(f"{notebook.server_url}/healthz").json()["lastHeartbeat"] == 0  # the readiness checks beat nothing
    Notebook.objects.filter(pk=notebook.pk).update(last_activity=None)
    assert web(alice).get(notebook.proxy_path).status_code == 200
    Notebook.objects.filter(pk=notebook.pk).update(last_activity=None)  # only the heartbeat is left to tell
    assert services.refresh(notebook.pk) == NotebookState.READY
    notebook.refresh_from_db()
    beat_ms = httpx.get(f"{notebook.server_url}/healthz").json()["lastHeartbeat"]
    assert beat_ms > 0 and notebook.last_activity is not None
    assert abs(notebook.last_activity.timestamp() * 1000 - beat_ms) < 1

    # Both the heartbeat and the (simulated, idle) GPUs quiet for longer than NOTEBOOK_IDLE_S: warned.
    later = notebook.last_activity + timedelta(seconds=settings.NOTEBOOK_IDLE_S + 1)
    notebook = Notebook.objects.select_related("job", "owner").get(pk=notebook.pk)
    assert services.judge(notebook, max(later, timezone.now())).action == culling.Action.WARN


def test_no_code_server_on_the_portals_machine_fails_the_notebook_with_the_setting(
    grid: SimulatorBackend, alice: User, settings: Settings
) -> None:
    settings.NOTEBOOK_CODE_SERVER = "/nonexistent/code-server"
    notebook = services.start(alice, notebook_request(**CODE))
    run_jobs()
    assert services.refresh(notebook.pk) == NotebookState.ENDED
    notebook.refresh_from_db()
    assert notebook.end_reason == EndReason.FAILED and "NOTEBOOK_CODE_SERVER='/nonexistent/code-server'" in notebook.detail


def test_a_server_type_outside_the_offered_ones_is_refused_naming_the_field(
    grid: SimulatorBackend, alice: User, settings: Settings
) -> None:
    settings.NOTEBOOK_SERVER_TYPES = ["jupyter"]
    with pytest.raises(SpecError) as refused:
        services.start(alice, notebook_request(**CODE))
    assert refused.value.errors["server_type"] == ["must be one of jupyter, not 'code-server'"]


def _cookie(user: User) -> bytes:
    from django.conf import settings as django_settings

    client = Client()
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}".encode()


@pytest.mark.django_db(transaction=True)
async def test_its_websocket_goes_through_the_proxy_for_the_owner_only(request: pytest.FixtureRequest) -> None:
    start_ready = await sync_to_async(request.getfixturevalue)("start_ready")
    notebook = await sync_to_async(start_ready)(**CODE)
    got: list[Any] = []
    try:
        # at a path under the proxy's, at the proxy's own root (VS Code's remote channel may use either), and an outsider
        for role, path in (("alice", "stable-abc?reconnectionToken=1"), ("alice", "?reconnectionToken=2"), ("carol", "")):
            user = await sync_to_async(request.getfixturevalue)(role)
            headers = [(b"origin", ORIGIN.encode()), (b"host", b"testserver"), (b"cookie", await sync_to_async(_cookie)(user))]
            communicator = WebsocketCommunicator(application, f"{notebook.proxy_path}{path}", headers=headers)
            connected = await communicator.connect(timeout=30)
            got.append(connected)
            if connected[0]:
                await communicator.send_to(text_data="ping from the editor")
                got.append(await communicator.receive_from(timeout=30))
            await communicator.disconnect()
    finally:
        await sync_to_async(connections.close_all)()
    assert got == [(True, None), "ping from the editor", (True, None), "ping from the editor", (False, 4403)]
