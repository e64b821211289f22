"""A job submission body from a YAML/JSON spec file and `--set key=value` overrides.

The body is exactly what POST /api/v1/jobs/ takes; the portal validates it and names the field and
the limit when something is wrong. A `--set` value that reads as a YAML number, list or mapping is
sent as one (8, [a, b], {k: v}), anything else as the text typed; template params and env are
always text. A dotted key sets a nested field (env.SEED=1, params.scene=s.blend); with a template,
a plain key that is one of the template's placeholders goes into `params`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from gridctl.errors import UsageError


def load(source: str | None) -> dict[str, Any]:
    """The spec from a file (or '-' for stdin); an empty body without one."""
    if source is None:
        return {}
    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the job spec {source}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw)  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as exc:
        raise UsageError(f"the job spec {source} is not valid YAML or JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"the job spec {source} must be a mapping of fields (name, gpu_model, ...), not {type(data).__name__}")
    return data


def parse_assignment(text: str) -> tuple[list[str], str, Any]:
    """(dotted key as a list, the value as typed, the value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set takes key=value (got {text!r})")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    # Numbers, lists and mappings are read as YAML; anything else stays the text typed (name=007, a=true, 1e3).
    if (
        isinstance(parsed, bool)
        or not isinstance(parsed, (int, list, dict))
        or (isinstance(parsed, int) and str(parsed) != value.strip())
    ):
        parsed = value
    return [part.strip() for part in key.split(".")], value, parsed


def apply_sets(body: dict[str, Any], assignments: list[str], placeholders: set[str]) -> dict[str, Any]:
    """Apply --set assignments to the body (a copy); plain keys naming a template placeholder go to params."""
    result: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    for text in assignments:
        path, typed, value = parse_assignment(text)
        if len(path) == 1 and path[0] in placeholders and path[0] not in result:
            path = ["params", path[0]]
        target = result
        for part in path[:-1]:
            inner = target.setdefault(part, {})
            if not isinstance(inner, dict):
                raise UsageError(f"--set {text}: {part} is not a mapping in the spec")
            target = inner
        # Template placeholders are text in the portal: keep the value as given, not as a YAML number.
        target[path[-1]] = typed if path[0] in ("params", "env") and not isinstance(value, (dict, list)) else value
    return result
