"""Disaster recovery: consistent, checksummed backups of the portal and verified restores.

What is backed up: the database (everything the portal knows lives there) and the files under
DATA_DIR/files (BACKUP_FILES_DIR), a folder kept for the portal's own files; nothing is stored
there today, so backups usually hold the database alone. Not backed up, because each is rebuilt
or transient: the file broker's queues (broker/, broker-done/: beat re-sends periodic work),
collected static files (static/: `collectstatic`), Celery beat's schedule file and the backups
folder itself. docs/operations.md is the operator's guide.
"""

from portal.backup.database import DatabaseConfig, DatabaseError, NotEmptyError, TableSum
from portal.backup.manifest import MANIFEST, Manifest, ManifestError
from portal.backup.service import (
    BackupError,
    BackupResult,
    PruneResult,
    RestoreResult,
    VerificationError,
    backup_settings,
    create_backup,
    default_database,
    inventory,
    model_tables,
    prune,
    resolve,
    restore_backup,
    target_for,
)
from portal.backup.targets import LocalDirectory, S3Bucket, Target, TargetError, open_target

# Everything a backup or restore raises when it cannot go on; each message says what is wrong.
FAILURES = (BackupError, DatabaseError, ManifestError, TargetError)

__all__ = [
    "FAILURES",
    "MANIFEST",
    "BackupError",
    "BackupResult",
    "DatabaseConfig",
    "DatabaseError",
    "LocalDirectory",
    "Manifest",
    "ManifestError",
    "NotEmptyError",
    "PruneResult",
    "RestoreResult",
    "S3Bucket",
    "TableSum",
    "Target",
    "TargetError",
    "VerificationError",
    "backup_settings",
    "create_backup",
    "default_database",
    "inventory",
    "model_tables",
    "open_target",
    "prune",
    "resolve",
    "restore_backup",
    "target_for",
]
