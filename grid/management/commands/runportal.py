"""Run the whole portal in the foreground: web server, Celery worker and beat. Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the portal (daphne) with a Celery worker and beat, until interrupted."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Only the web server.")

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        data = settings.DATA_DIR
        sqlite = str(settings.DATABASES["default"]["ENGINE"]).endswith("sqlite3")
        # One writer at a time suits SQLite; on PostgreSQL the worker forks two processes.
        pool = ["--pool=solo"] if sqlite else ["--concurrency=2"]
        commands = {
            "web": [python, "-m", "daphne", "-b", options["host"], "-p", str(options["port"]), "grid.asgi:application"],
        }
        if not options["no_worker"]:
            commands["worker"] = [python, "-m", "celery", "-A", "portal", "worker", "--loglevel=WARNING", *pool]
            commands["beat"] = [
                python, "-m", "celery", "-A", "portal", "beat", "--loglevel=WARNING",
                f"--schedule={data / 'celerybeat-schedule'}",
            ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        children = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}
        self.stdout.write(
            self.style.SUCCESS(f"Portal on http://{options['host']}:{options['port']}/ ({', '.join(children)}); Ctrl-C stops it.")
        )
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with {child.returncode}; stopping the others")
                        stopping = True
                time.sleep(0.5)
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
