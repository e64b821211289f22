"""Settings from the environment: strict parsing with messages that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.env import ConfigError, env_bool, env_choice, env_float, parse_database_url

ROOT = Path(__file__).resolve().parents[2]


def test_database_urls_become_django_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTAL_SERVER", raising=False)  # importing grid.wsgi anywhere in this process sets it
    pg = parse_database_url("postgres://grid:s%40cret@db.internal:6543/portal?sslmode=require", tmp_path).as_django()
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql", "portal", "grid", "s@cret", "db.internal", "6543",
    )  # fmt: skip
    pg_options = pg["OPTIONS"]
    assert isinstance(pg_options, dict)
    assert pg_options["sslmode"] == "require" and pg_options["pool"]["max_size"] == 8
    assert pg_options["options"] == "-c random_page_cost=1.1"
    assert pg["CONN_MAX_AGE"] == 0 and pg["CONN_HEALTH_CHECKS"] is True
    monkeypatch.setenv("PORTAL_SERVER", "wsgi")  # a sync worker: one persistent connection, no pool
    wsgi = parse_database_url("postgres://grid@db.internal/portal", tmp_path).as_django()
    wsgi_options = wsgi["OPTIONS"]
    assert isinstance(wsgi_options, dict) and "pool" not in wsgi_options
    assert wsgi["CONN_MAX_AGE"] == 600 and wsgi["CONN_HEALTH_CHECKS"] is True
    lite = parse_database_url("sqlite:///var/x.sqlite3", tmp_path).as_django()
    lite_options = lite["OPTIONS"]
    assert isinstance(lite_options, dict)
    assert lite["NAME"] == str(tmp_path / "var/x.sqlite3") and "journal_mode=WAL" in lite_options["init_command"]


@pytest.mark.parametrize("url", ["mysql://x/y", "postgres://host/", "sqlite://", "nonsense"])
def test_unusable_database_urls_are_refused_by_name(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_database_url(url, tmp_path)


def test_booleans_numbers_and_choices_are_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ConfigError, match="X_FLAG='maybe'"):
        env_bool("X_FLAG", False)
    monkeypatch.setenv("X_SPEED", "-3")
    with pytest.raises(ConfigError, match=r"between 0\.01 and 10"):
        env_float("X_SPEED", 1.0, minimum=0.01, maximum=10)
    monkeypatch.setenv("X_BACKEND", "nomad")
    with pytest.raises(ConfigError, match="simulator, slurm"):
        env_choice("X_BACKEND", "simulator", ("simulator", "slurm"))


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "grid.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_mode_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = run_check(DEBUG="false", PORTAL_DATA_DIR=str(tmp_path))
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


def test_a_bad_setting_stops_start_up_with_its_name(tmp_path: Path) -> None:
    result = run_check(DEBUG="true", SIM_SPEED="fast", PORTAL_DATA_DIR=str(tmp_path))
    assert result.returncode != 0 and "SIM_SPEED='fast'" in result.stderr


def test_the_embedded_default_needs_no_servers(tmp_path: Path) -> None:
    result = run_check(DEBUG="true", PORTAL_DATA_DIR=str(tmp_path), DATABASE_URL="", REDIS_URL="")
    assert result.returncode == 0, result.stderr
