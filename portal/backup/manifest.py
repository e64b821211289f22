"""The manifest: what a backup holds and how to check it, written last so that its presence marks a complete backup."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from portal.backup.database import TableSum

MANIFEST = "manifest.json"
FORMAT = 1


class ManifestError(Exception):
    """A manifest is missing, unreadable or of a format this portal does not know."""


@dataclass(frozen=True)
class Artefact:
    """One file of a backup, with the size and sha256 it had when written."""

    sha256: str
    bytes: int


@dataclass
class Manifest:
    """Everything needed to restore a backup and prove the restore equals the source."""

    name: str
    created_at: str
    portal_version: str
    database: dict[str, str]
    checksum_method: str
    tables: dict[str, TableSum]
    artefacts: dict[str, Artefact] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            data: dict[str, Any] = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ManifestError(f"{where}: manifest format {data.get('format')!r}, this portal reads format {FORMAT}")
            data["tables"] = {name: TableSum(**value) for name, value in data["tables"].items()}
            data["artefacts"] = {name: Artefact(**value) for name, value in data["artefacts"].items()}
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{where}: the manifest is not readable ({exc})") from exc


def sha256_of(path: Path) -> Artefact:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return Artefact(sha256=digest.hexdigest(), bytes=path.stat().st_size)
