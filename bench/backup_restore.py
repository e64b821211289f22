"""Benchmark: `backup` and `restore` (with verification) of a PostgreSQL database holding 1,000,000 jobs.

Creates a scratch database, migrates it, inserts the jobs in one INSERT ... SELECT generate_series
(the same rows as bench/job_list.py, 10 teams), optionally N events per job, then times:

- backup: pg_dump --format=custom of one exported snapshot while the table checksums run in it,
  sha256 of the dump, copy to a local backup directory, read back and compare, manifest;
- restore: sha256 of the artefact, pg_restore --single-transaction (or --jobs N) into a second,
  empty scratch database, ANALYZE, then every table's count and checksum against the manifest;
- the checksums of the source alone (what verification costs on its own).

Both scratch databases and the backup folder are removed at the end, also on errors and Ctrl-C.
Prints the figures and writes bench/results/backup_restore.json.

    .venv/bin/python bench/backup_restore.py
    .venv/bin/python bench/backup_restore.py --jobs 100000 --events 2 --restore-jobs 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (
    REPO,
    data_dir,
    exit_cleanly_on_sigterm,
    log,
    machine_info,
    portal_env,
    scratch_database,
    setup_django,
    source_tree,
    write_json,
)
from bench.job_list import INSERT_JOBS, LAYOUTS, STATES, TEAMS

INSERT_EVENTS = """
INSERT INTO jobs_jobevent (job_id, at, from_state, to_state, actor, reason, pool)
SELECT j.id, j.submitted_at + make_interval(secs => e), '', j.state, 'system', 'bench', ''
FROM jobs_job j CROSS JOIN generate_series(1, %(events)s) AS e
"""


def load(jobs: int, events: int) -> dict[str, Any]:
    """Teams, owners, `jobs` jobs and `events` events per job, then VACUUM ANALYZE."""
    from django.db import connection

    from portal.models import Membership, Team, TeamRole, User

    teams = [Team.objects.create(slug=f"team-{i:02d}", name=f"Team {i}") for i in range(TEAMS)]
    owners = [User.objects.create_user(username=f"owner-{i:02d}", password=None) for i in range(TEAMS)]
    Membership.objects.bulk_create(
        Membership(user=u, team=t, role=TeamRole.RESEARCHER) for u, t in zip(owners, teams, strict=True)
    )
    log(f"inserting {jobs:,} jobs and {jobs * events:,} events ...")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        params: dict[str, Any] = {"teams": [t.pk for t in teams], "owners": [u.pk for u in owners], "n_teams": TEAMS}
        params |= {"states": STATES, "n_states": len(STATES), "jobs": jobs}
        cursor.execute(INSERT_JOBS.replace("{team_index}", LAYOUTS["round-robin"]), params)
        if events:
            cursor.execute(INSERT_EVENTS, {"events": events})
        cursor.execute("SET synchronous_commit = on")
        cursor.execute("VACUUM (ANALYZE)")
        cursor.execute("SELECT pg_database_size(current_database()), pg_size_pretty(pg_database_size(current_database()))")
        size, pretty = cursor.fetchone()
    loaded = round(time.perf_counter() - started, 1)
    log(f"  loaded in {loaded}s; database {pretty}")
    return {"jobs": jobs, "events": jobs * events, "database_bytes": size, "database_size": pretty, "load_s": loaded}


def measure(source_url: str, restore_url: str, folder: Path, restore_jobs: int) -> dict[str, Any]:
    from django.conf import settings

    from portal import backup
    from portal.backup import database

    source = backup.DatabaseConfig.from_url(source_url, settings.BASE_DIR)
    dest = backup.DatabaseConfig.from_url(restore_url, settings.BASE_DIR)
    target = backup.LocalDirectory(folder / "backups")

    started = time.perf_counter()
    sums = database.table_sums(source)
    checksums_s = round(time.perf_counter() - started, 2)
    log(f"checksums of the source alone: {checksums_s}s")

    started = time.perf_counter()
    made = backup.create_backup(target, keep=1, db=source, files_dir=folder / "files", say=log)
    backup_s = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    restored = backup.restore_backup(target, made.name, dest, files_dir=folder / "restored-files", jobs=restore_jobs, say=log)
    restore_s = round(time.perf_counter() - started, 2)
    assert database.table_sums(dest) == sums == made.manifest.tables
    dump = made.manifest.artefacts["database.dump"]
    return {
        "backup_s": backup_s,
        "backup_steps_s": made.manifest.timings_s,
        "dump_bytes": dump.bytes,
        "restore_and_verify_s": restore_s,
        "restore_steps_s": restored.timings_s,
        "restore_jobs": restore_jobs,
        "checksums_source_s": checksums_s,
        "tables": len(sums),
        "rows": sum(s.rows for s in sums.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to insert (default 1,000,000)")
    parser.add_argument("--events", type=int, default=0, help="events per job (default 0)")
    parser.add_argument("--restore-jobs", type=int, default=1, help="pg_restore --jobs (1: one transaction)")
    parser.add_argument("--output", default="backup_restore.json")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    _, source_info = source_tree(REPO, working_tree=True)
    with scratch_database("bench_backup") as source_url, scratch_database("bench_restore") as restore_url, data_dir() as folder:
        setup_django(portal_env(source_url, folder))
        loaded = load(args.jobs, args.events)
        figures = measure(source_url, restore_url, folder, args.restore_jobs)
        machine = machine_info(source_url)
    command = (
        f".venv/bin/python bench/backup_restore.py --jobs {args.jobs} --events {args.events} --restore-jobs {args.restore_jobs}"
    )
    machine["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]  # other work on the machine slows every figure
    payload = {
        "benchmark": "backup_restore",
        "command": command,
        "source": source_info,
        "machine": machine,
        "load": loaded,
        **figures,
    }
    path = write_json(args.output, payload)
    print(f"{args.jobs:,} jobs, {loaded['database_size']} database, dump {figures['dump_bytes'] / 1e6:.1f} MB")
    print(f"backup (dump + checksums, store, read back): {figures['backup_s']}s")
    print(f"restore (check, pg_restore, ANALYZE, verify every table): {figures['restore_and_verify_s']}s")
    print(f"checksums of the source alone: {figures['checksums_source_s']}s; written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
