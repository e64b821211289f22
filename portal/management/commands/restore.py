"""Restore a backup into an empty database and prove, table by table, that it equals the source."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal import backup
from portal.env import ConfigError


class Command(BaseCommand):
    help = (
        "Restore BACKUP (a name in the target, 'latest', or DIR/backup-... or s3://bucket/prefix/backup-...) into an "
        "empty database, then compare every table's row count and checksum with the backup's manifest."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup", help="latest, backup-YYYYMMDDTHHMMSSZ, or its full location")
        parser.add_argument("--target", help="Where to look for a backup given by name (default: BACKUP_TARGET).")
        parser.add_argument("--database-url", help="The empty database to restore into (default: the portal's DATABASE_URL).")
        parser.add_argument(
            "--jobs", type=int, default=1, help="PostgreSQL: parallel pg_restore jobs (>1 gives up the single transaction)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Check the artefacts and the destination; restore nothing.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            target, name = self._locate(options["backup"], options["target"])
            db = self._database(options["database_url"])
            if not options["dry_run"]:
                self._confirm(f"Restore {name} from {target.location} into {db.describe()}?", options["yes"])
            result = backup.restore_backup(
                target, name, db, dry_run=options["dry_run"], jobs=max(1, options["jobs"]), say=self.stdout.write
            )
        except backup.VerificationError as exc:
            raise CommandError(f"verification failed: {exc}") from exc
        except backup.FAILURES as exc:
            raise CommandError(str(exc)) from exc
        done = "restored and verified" if result.restored else "checked (dry run: nothing restored)"
        self.stdout.write(self.style.SUCCESS(f"{name} {done}: {result.tables} tables, {result.rows:,} rows"))

    def _locate(self, given: str, target_option: str | None) -> tuple[backup.Target, str]:
        if "/" in given.rstrip("/"):
            location, _, name = given.rstrip("/").rpartition("/")
            target = backup.target_for(location)
        else:
            target, name = backup.target_for(target_option), given
        return target, backup.resolve(target, name)

    def _database(self, url: str | None) -> backup.DatabaseConfig:
        if url is None:
            return backup.default_database()
        try:
            return backup.DatabaseConfig.from_url(url, settings.BASE_DIR)
        except ConfigError as exc:
            raise CommandError(str(exc).replace("DATABASE_URL=", "--database-url=")) from exc

    def _confirm(self, question: str, yes: bool) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise CommandError(f"{question} Pass --yes to restore without a prompt.")
        if input(f"{question} [yes/no] ").strip().lower() != "yes":
            raise CommandError("not restored")
