"""The project's copies of the real CRDs (schemas/crds/), as validators tests and the fake API share.

A CRD's `openAPIV3Schema` is checked here the way the API server checks a custom resource:
structural validation (types, enums, patterns, bounds, required) gives 422-style errors with
field paths, and fields the schema does not know are "unknown fields" (dropped, or refused
under `fieldValidation=Strict`). CEL rules (`x-kubernetes-validations`) are evaluated with the
`common-expression-language` library: every rule on a field the object has, with `self` bound to
that field's value; a transition rule (one that names `oldSelf`) only on an update, where the old
object has the field too, as the API server does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel
import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "schemas" / "crds"


@dataclass(frozen=True)
class CrdVersion:
    """One served version of a CRD: its names, scope and schema."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    schema: dict[str, Any]
    storage: bool = False

    def errors(self, obj: dict[str, Any]) -> list[tuple[str, str]]:
        """(field path, message) for every schema violation, like the API server's 422 causes."""
        validator = jsonschema.Draft4Validator(self.schema)
        found = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            found.append((_path(error.absolute_path), error.message[:300]))
        return found

    def unknown_fields(self, obj: Any) -> list[str]:
        """Paths of fields the schema does not declare (the server prunes them, or refuses under Strict)."""
        return list(_unknown(obj, self.schema, ""))

    def prune(self, obj: Any) -> Any:
        """The object as the API server stores it: unknown fields dropped."""
        return _prune(obj, self.schema)

    def cel_rules(self) -> list[CelRule]:
        """Every `x-kubernetes-validations` rule of the schema, with the field it sits on."""
        return list(_rules(self.schema, ""))

    def cel_errors(self, obj: Any, old: Any = None) -> list[tuple[str, str]]:
        """(field path, message) for every CEL rule the object breaks; `old`: the stored object, for an update."""
        return list(_cel_errors(obj, old, self.schema, ""))


@dataclass(frozen=True)
class CelRule:
    """One CEL validation rule of a CRD schema and the field it applies to (`[*]`: every item)."""

    path: str
    rule: str
    message: str
    transition: bool  # names oldSelf: evaluated on updates only


def _rule_of(raw: dict[str, Any], at: str) -> CelRule:
    unsupported = {"messageExpression", "optionalOldSelf"} & raw.keys()
    if unsupported:  # not needed by the CRDs here; refuse rather than check a rule wrongly
        raise NotImplementedError(f"{at}: CEL rule fields {sorted(unsupported)} are not evaluated by these tests")
    rule = str(raw["rule"])
    return CelRule(at, rule, str(raw.get("message") or f"failed rule: {rule}"), "oldSelf" in cel.compile(rule).variables())


def _rules(schema: dict[str, Any], at: str) -> Iterator[CelRule]:
    for raw in schema.get("x-kubernetes-validations") or []:
        yield _rule_of(raw, at)
    for key, sub in (schema.get("properties") or {}).items():
        yield from _rules(sub, f"{at}.{key}" if at else key)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _rules(schema[key], f"{at}[*]")


def _check(schema: dict[str, Any], value: Any, old: Any, at: str) -> Iterator[tuple[str, str]]:
    for raw in schema.get("x-kubernetes-validations") or []:
        rule = _rule_of(raw, at)
        if rule.transition and old is None:
            continue  # a create, or a field the old object did not have: transition rules do not apply
        result = cel.evaluate(rule.rule, {"self": value, "oldSelf": old} if rule.transition else {"self": value})
        if result is not True:
            yield at or "<root>", f"Invalid value: {rule.message}"


def _cel_errors(obj: Any, old: Any, schema: dict[str, Any], at: str) -> Iterator[tuple[str, str]]:
    yield from _check(schema, obj, old, at)
    if isinstance(obj, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        for key, value in obj.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from _cel_errors(value, old_map.get(key), sub, f"{at}.{key}" if at else key)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):  # items are not matched to old items (atomic lists): no oldSelf inside
            yield from _cel_errors(item, None, schema["items"], f"{at}[{i}]")


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _free_form(schema: dict[str, Any], at: str) -> bool:
    """Objects whose fields the schema does not constrain (top-level ObjectMeta is the server's own)."""
    return (
        bool(schema.get("x-kubernetes-preserve-unknown-fields")) or schema.get("additionalProperties") is True or at == "metadata"
    )


def _unknown(obj: Any, schema: dict[str, Any], at: str) -> Iterator[str]:
    if isinstance(obj, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for key, value in obj.items():
            where = f"{at}.{key}" if at else key
            if key in props:
                yield from _unknown(value, props[key], where)
            elif isinstance(extra, dict):
                yield from _unknown(value, extra, where)
            elif not _free_form(schema, at):
                yield where
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            yield from _unknown(item, schema["items"], f"{at}[{i}]")


def _prune(obj: Any, schema: dict[str, Any], at: str = "") -> Any:
    if isinstance(obj, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        kept = {}
        for key, value in obj.items():
            where = f"{at}.{key}" if at else key
            if key in props:
                kept[key] = _prune(value, props[key], where)
            elif isinstance(extra, dict):
                kept[key] = _prune(value, extra, where)
            elif _free_form(schema, at):
                kept[key] = value
        return kept
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"], at) for item in obj]
    return obj


@functools.cache
def load_crds() -> dict[tuple[str, str, str], CrdVersion]:
    """Every served version of every CRD in schemas/crds/, keyed by (group, version, plural)."""
    found: dict[tuple[str, str, str], CrdVersion] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            key = (spec["group"], version["name"], spec["names"]["plural"])
            found[key] = CrdVersion(
                *key,
                spec["names"]["kind"],
                spec["scope"] == "Namespaced",
                version["schema"]["openAPIV3Schema"],
                bool(version.get("storage")),
            )
    return found


def crd_for(api_version: str, kind: str) -> CrdVersion:
    """The CRD version for an object's apiVersion and kind; KeyError when the project has none."""
    group, _, version = api_version.partition("/")
    for crd in load_crds().values():
        if (crd.group, crd.version, crd.kind) == (group, version, kind):
            return crd
    raise KeyError(f"no CRD for {api_version} {kind} in {CRD_DIR}")
