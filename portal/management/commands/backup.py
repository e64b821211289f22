"""Back up the database and the portal's files to BACKUP_TARGET (a directory or s3://bucket/prefix)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal import backup


class Command(BaseCommand):
    help = "Write a consistent, compressed, checksummed backup, verify it, and keep the newest --keep backups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", help="A directory or s3://bucket/prefix (default: BACKUP_TARGET).")
        parser.add_argument("--keep", type=int, help="Complete backups to keep, this one included (default: BACKUP_KEEP).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be written and pruned; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        keep = options["keep"] if options["keep"] is not None else backup.backup_settings().keep
        try:
            target = backup.target_for(options["target"])
            if options["dry_run"]:
                self._dry_run(target, keep)
                return
            result = backup.create_backup(target, keep=keep, say=self.stdout.write)
        except backup.FAILURES as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"{result.name} written and verified in {result.location}"))

    def _dry_run(self, target: backup.Target, keep: int) -> None:
        db = backup.default_database()
        self.stdout.write(f"would back up {db.describe()} and {backup.backup_settings().files_dir} to {target.location}")
        self.stdout.write(f"would keep the newest {keep} complete backups, the new one included")
        # After a real run the new backup is one of the `keep`, so keep-1 of the existing ones stay.
        backup.prune(target, keep - 1, dry_run=True, say=self.stdout.write)
