"""deploy/ansible: ansible-lint, a syntax check, and both roles run for real against localhost.

The roles run twice on this machine (connection local): once in --check mode as written, and
once for real with every path under a temporary folder and without packages, services or the
kubeadm join, so that the files they write (gres.conf from `nvidia-smi -L`, the job mapping
prolog and epilog, the kubeadm join configuration) can be read back and checked against what
the portal expects. ansible-core and ansible-lint come from requirements-dev.txt; under CI=true
they must be there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from cluster.backends.kubernetes.manifests import GPU_RESOURCE
from cluster.gpus import GPU_MODELS

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "deploy" / "ansible"
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI") == "true"
NVIDIA_SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1c0c1e-0000-0000-0000-000000000000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1c0c1e-0000-0000-0000-000000000001)
GPU 2: NVIDIA L4 (UUID: GPU-5f1c0c1e-0000-0000-0000-000000000002)
"""


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI=true: {name} is not installed in {BIN} (pip install -r requirements-dev.txt)")
        pytest.skip(f"{name} is not installed")
    return str(path)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(args, cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=600, check=False, **kwargs)


def test_ansible_lint_passes_at_the_production_profile() -> None:
    done = run([tool("ansible-lint"), "--offline", "--profile", "production", "site.yml", "roles"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_site_playbook_passes_a_syntax_check() -> None:
    done = run([tool("ansible-playbook"), "--syntax-check", "-i", "inventory/example/hosts.yml", "site.yml"])
    assert done.returncode == 0, done.stdout + done.stderr


def localhost(tmp_path: Path, nvidia_smi: str = NVIDIA_SMI, **extra: Any) -> list[str]:
    """Inventory and variables that point both roles at localhost, writing under tmp_path only."""
    root = tmp_path / "root"
    (tmp_path / "munge.key").write_bytes(os.urandom(1024))
    (tmp_path / "slurm.conf").write_text("ClusterName=test\n")
    inventory = {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_become": False,
                    "ansible_python_interpreter": sys.executable,
                }
            },
            "children": {"slurm_gpu_nodes": {"hosts": {"localhost": None}}, "k8s_gpu_nodes": {"hosts": {"localhost": None}}},
        }
    }
    variables = {
        "slurm_gpu_node_slurm_conf_file": str(tmp_path / "slurm.conf"),
        "slurm_gpu_node_munge_key_file": str(tmp_path / "munge.key"),
        "slurm_gpu_node_install_packages": False,
        "slurm_gpu_node_manage_services": False,
        "slurm_gpu_node_conf_dir": str(root / "etc/slurm"),
        "slurm_gpu_node_munge_dir": str(root / "etc/munge"),
        "slurm_gpu_node_systemd_dir": str(root / "etc/systemd/system"),
        "slurm_gpu_node_tmpfiles_dir": str(root / "etc/tmpfiles.d"),
        "slurm_gpu_node_dcgm_job_map_dir": str(root / "run/dcgm-job-map"),
        "slurm_gpu_node_nvidia_smi_output": nvidia_smi,
        "k8s_gpu_node_install_packages": False,
        "k8s_gpu_node_manage_services": False,
        "k8s_gpu_node_swap_off": False,
        "k8s_gpu_node_api_server": "k8s-api.test:6443",
        "k8s_gpu_node_join_token": "abcdef.0123456789abcdef",
        "k8s_gpu_node_ca_cert_hash": "sha256:" + "0" * 64,
        "k8s_gpu_node_pool": "onprem-h100",
        "k8s_gpu_node_kubeadm_dir": str(root / "etc/kubernetes"),
        "k8s_gpu_node_modules_dir": str(root / "etc/modules-load.d"),
        "k8s_gpu_node_sysctl_dir": str(root / "etc/sysctl.d"),
        **extra,
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(variables))
    return [tool("ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'vars.yml'}", "site.yml"]


def test_both_roles_run_in_check_mode_against_localhost(tmp_path: Path) -> None:
    done = run([*localhost(tmp_path), "--check", "--diff"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "failed=0" in done.stdout
    assert "Type=h100 File=/dev/nvidia1" in done.stdout  # the diff of gres.conf
    assert not (tmp_path / "root").exists()  # --check wrote nothing


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp_path = tmp_path_factory.mktemp("ansible")
    done = run([*localhost(tmp_path, k8s_gpu_node_join=False)])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return tmp_path / "root", done.stdout


def test_gres_conf_names_each_gpu_by_the_portals_model_key(applied: tuple[Path, str]) -> None:
    root, output = applied
    lines = [line for line in (root / "etc/slurm/gres.conf").read_text().splitlines() if line.startswith("NodeName=")]
    assert lines == [
        "NodeName=localhost Name=gpu Type=h100 File=/dev/nvidia0",
        "NodeName=localhost Name=gpu Type=h100 File=/dev/nvidia1",
        "NodeName=localhost Name=gpu Type=l4 File=/dev/nvidia2",
    ]
    assert {"h100", "l4"} <= set(GPU_MODELS)
    assert "NodeName=localhost Gres=gpu:h100:2,gpu:l4:1" in output  # the line slurm.conf on the head needs
    cgroup = (root / "etc/slurm/cgroup.conf").read_text()
    assert "ConstrainDevices=yes" in cgroup
    assert oct((root / "etc/munge/munge.key").stat().st_mode & 0o777) == "0o400"


def test_the_prolog_and_epilog_keep_dcgm_exporters_job_mapping(applied: tuple[Path, str]) -> None:
    root, _ = applied
    mapping = root / "run/dcgm-job-map"
    prolog = root / "etc/slurm/prolog.d/50-dcgm-job-map.sh"
    epilog = root / "etc/slurm/epilog.d/50-dcgm-job-map.sh"
    job = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_JOB_GPUS": "0,2"}
    subprocess.run([str(prolog)], env=job, check=True, timeout=10)
    assert sorted(p.name for p in mapping.iterdir()) == ["0", "2"]
    assert (mapping / "2").read_text() == "4242\n"
    # another job took GPU 2 since: this job's epilog leaves its file alone
    (mapping / "2").write_text("4243\n")
    subprocess.run([str(epilog)], env=job, check=True, timeout=10)
    assert sorted(p.name for p in mapping.iterdir()) == ["2"]
    unit = (root / "etc/systemd/system/dcgm-exporter.service").read_text()
    assert f"--hpc-job-mapping-dir {mapping}" in unit


def test_the_kubeadm_join_gives_the_pool_label_and_the_taint_the_portals_jobs_tolerate(applied: tuple[Path, str]) -> None:
    root, _ = applied
    path = root / "etc/kubernetes/kubeadm-join.yaml"
    join = yaml.safe_load(path.read_text())
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it holds the bootstrap token
    assert join["kind"] == "JoinConfiguration" and join["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    registration = join["nodeRegistration"]
    args = {a["name"]: a["value"] for a in registration["kubeletExtraArgs"]}
    assert args["node-labels"] == f"{settings.K8S_NODE_POOL_LABEL}=onprem-h100"
    assert registration["taints"] == [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]
    assert join["discovery"]["bootstrapToken"]["caCertHashes"] == ["sha256:" + "0" * 64]


def test_a_gpu_the_portal_does_not_know_stops_the_play_with_its_name(tmp_path: Path) -> None:
    done = run(localhost(tmp_path, nvidia_smi="GPU 0: NVIDIA B200 (UUID: GPU-5f1c0c1e-0000-0000-0000-000000000000)\n"))
    assert done.returncode != 0
    assert "NVIDIA B200" in done.stdout and "slurm_gpu_node_gpu_types" in done.stdout


def test_a_malformed_ca_hash_is_refused_before_anything_changes(tmp_path: Path) -> None:
    done = run(localhost(tmp_path, k8s_gpu_node_ca_cert_hash="sha256:abc"))
    assert done.returncode != 0
    assert "k8s_gpu_node_ca_cert_hash" in done.stdout
    assert not (tmp_path / "root" / "etc/kubernetes").exists()


def test_the_tools_are_the_ones_requirements_dev_pins() -> None:
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
        if line.startswith("ansible")
    )
    assert set(pins) == {"ansible-core", "ansible-lint"}
    assert shutil.which("ansible-lint", path=str(BIN)) or not IN_CI
