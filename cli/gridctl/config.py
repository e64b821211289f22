"""Where gridctl finds the portal and its token: flags, then GRID_URL/GRID_TOKEN, then the config file.

The file is $GRIDCTL_CONFIG, else $XDG_CONFIG_HOME/gridctl/config.yaml, else ~/.config/gridctl/config.yaml.
It holds a secret, so it is created 0600 (its folder 0700) and rewritten 0600 every time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gridctl.errors import UsageError


@dataclass(frozen=True)
class Settings:
    url: str
    token: str


def config_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if explicit := env.get("GRIDCTL_CONFIG"):
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gridctl" / "config.yaml"


def read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"the config file {path} must hold a mapping with url and token")
    return data


def write_file(path: Path, url: str, token: str) -> None:
    """Write url and token, readable by the owner only (also when the file existed with wider modes)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump({"url": url, "token": token}, out, default_flow_style=False)


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"URL must start with http:// or https:// (got {url!r})")
    return url


def resolve(url: str | None, token: str | None, path: Path) -> Settings:
    """The portal and token to use: a flag wins over GRID_URL/GRID_TOKEN, which win over the file."""
    stored = read_file(path)
    found_url = url or os.environ.get("GRID_URL") or stored.get("url")
    found_token = token or os.environ.get("GRID_TOKEN") or stored.get("token")
    if not found_url:
        raise UsageError(f"no portal URL: run `gridctl login URL`, set GRID_URL or pass --url (config: {path})")
    if not found_token:
        raise UsageError(f"no API token: run `gridctl login {found_url}` or set GRID_TOKEN (config: {path})")
    return Settings(normalise_url(str(found_url)), str(found_token))
