"""Celery tasks of the portal app: a thin wrapper over portal.backup."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from portal import backup

logger = logging.getLogger(__name__)


# Not acked late: a worker lost mid-backup leaves an incomplete backup (no manifest) that the next
# night's run reports; replaying it at once could run two dumps side by side on a busy database.
@shared_task(acks_late=False, ignore_result=True, expires=6 * 3600)
def nightly_backup() -> dict[str, Any]:
    """Back up to BACKUP_TARGET and keep the newest BACKUP_KEEP complete backups."""
    config = backup.backup_settings()
    result = backup.create_backup(backup.target_for(), keep=config.keep, say=logger.info)
    return {
        "backup": result.name,
        "location": result.location,
        "pruned": result.pruned.deleted,
        "incomplete": result.pruned.incomplete,
    }
