"""Validation of a job request: raw input in, a clean JobSpec or per-field errors out.

Pure: the caller passes the user's teams, the grid's shape, the template and the site limits.
Every message names the field and the limit it broke; nothing is created unless all fields pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from cluster.gpus import GPU_MODELS, shared_model_for, shares_of

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ENV_KEY_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,299}$", re.IGNORECASE)
PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{0,299}$")
PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
WALLTIME_RE = re.compile(r"^(?:(\d+)-)?(\d{1,3}):(\d{2}):(\d{2})$")
ARRAY_RE = re.compile(r"^(\d+)-(\d+)(?::(\d+))?$")

MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_ENV = 64
MAX_PARAM_CHARS = 200
KINDS = ("training", "rendering", "simulation", "custom", "interactive")


@dataclass(frozen=True)
class SubmitField:
    """One field of a submission: its JSON type, whether it must be given, static bounds, and what it means.

    The API serializer (and so the OpenAPI schema) is built from these, and `validate` accepts
    exactly these names, so what is documented and what is accepted cannot drift apart. Bounds that
    depend on the grid or the template (GPUs per node, walltime) are checked in `validate`.
    """

    kind: str  # "string", "integer", "string-list", "string-map", "map"
    help: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    label: str = ""  # the web form's label; empty: derived from the name


CHECKPOINT_INTERVAL_S = (60, 86400)
SUBMIT_FIELDS: dict[str, SubmitField] = {
    "team": SubmitField("string", "Team slug; optional if you are in one team."),
    "template": SubmitField("string", "Template slug, e.g. pytorch-ddp."),
    "name": SubmitField("string", "A name: letters, digits, dot, dash, underscore; at most 63 characters.", required=True),
    "kind": SubmitField("string", "What the job does.", choices=KINDS),
    "image": SubmitField("string", "Container image (Kubernetes)."),
    "command": SubmitField("string-list", "Argument list; no shell."),
    "script": SubmitField("string", "Batch script text (bounded size)."),
    "env": SubmitField("string-map", f"Environment variables (at most {MAX_ENV})."),
    "params": SubmitField("map", "Values for the template's placeholders."),
    "gpu_model": SubmitField("string", "GPU model, e.g. a100.", label="GPU model"),
    "gpus_per_node": SubmitField("integer", "GPUs on each node (at most a node's GPUs).", minimum=1, label="GPUs per node"),
    "gpu_fraction": SubmitField(
        "string",
        "Part of one GPU, in (0, 1]: 0.25 or 1/4. The job gets the smallest shared GPU of the model that gives"
        " at least this much (a MIG slice or a time-sliced GPU: /api/v1/pools/ lists them).",
        label="Part of a GPU",
    ),
    "nodes": SubmitField("integer", "Nodes for a multi-node gang.", minimum=1),
    "gpus": SubmitField("integer", "Total GPUs; split into whole nodes.", minimum=1),
    "priority": SubmitField("string", "Priority class, e.g. standard."),
    "walltime": SubmitField("string", "Seconds, HH:MM:SS or D-HH:MM:SS."),
    "walltime_s": SubmitField("integer", "The walltime in seconds (instead of `walltime`).", minimum=60),
    "checkpoint_dir": SubmitField("string", "Where the job writes its checkpoints."),
    "checkpoint_interval": SubmitField(
        "integer",
        "Seconds between the job's checkpoints; preemption prefers jobs that lose least.",
        minimum=CHECKPOINT_INTERVAL_S[0],
        maximum=CHECKPOINT_INTERVAL_S[1],
    ),
    "array": SubmitField("string", "Element count, or a range like 0-99 or 0-99:2."),
}
KNOWN_FIELDS = frozenset(SUBMIT_FIELDS)
# The web form shows these, in this order; the template comes from the URL and fills the rest
# (kind, params are shown one field per placeholder; gpus and walltime_s are API shorthands).
FORM_FIELDS = (
    "team", "name", "gpu_model", "gpus_per_node", "gpu_fraction", "nodes", "priority", "walltime", "image", "command",
    "script", "checkpoint_dir", "checkpoint_interval", "env", "array",
)  # fmt: skip


class SpecError(Exception):
    """The request broke one or more rules; `errors` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class TemplateInfo:
    """What validation needs of a JobTemplate."""

    slug: str
    kind: str
    image: str
    command: tuple[str, ...]
    params: Mapping[str, Any]
    gpu_model: str
    gpus_per_node: int
    nodes: int
    walltime_s: int
    max_gpus_per_node: int
    max_nodes: int
    max_walltime_s: int
    allowed_gpu_models: tuple[str, ...] = ()
    checkpoint_dir: str = ""


@dataclass(frozen=True)
class ModelShape:
    """How many GPUs the largest node of a model has, and how many the grid has in all."""

    max_gpus_per_node: int
    total_gpus: int


@dataclass(frozen=True)
class SpecContext:
    teams: Mapping[str, int]  # slug -> id, only the teams the user may submit to
    priorities: frozenset[str]
    grid: Mapping[str, ModelShape]
    known_gpu_models: frozenset[str]
    max_walltime_s: int
    max_script_bytes: int
    max_array_size: int
    template: TemplateInfo | None = None
    # Classes an operator limited to some teams: class name -> team slugs (a class not here is open to all).
    class_teams: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    team_id: int
    name: str
    kind: str
    image: str
    command: tuple[str, ...]
    script: str
    env: dict[str, str]
    gpu_model: str
    gpus_per_node: int
    nodes: int
    priority: str
    walltime_s: int
    checkpoint_dir: str
    template_slug: str | None
    array_indices: tuple[int, ...] | None = None
    params: dict[str, str] = field(default_factory=dict)
    checkpoint_interval_s: int | None = None

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


def format_walltime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_walltime(value: Any) -> int:
    """Seconds from an int, or from "HH:MM:SS" / "D-HH:MM:SS" as Slurm writes it."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or HH:MM:SS")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # '²' is a digit to str.isdigit() but not to int()
            return int(text)
        match = WALLTIME_RE.fullmatch(text)
        if match:
            days, hours, minutes, secs = (int(g or 0) for g in match.groups())
            if minutes > 59 or secs > 59:
                raise ValueError("minutes and seconds must be below 60")
            return ((days * 24 + hours) * 60 + minutes) * 60 + secs
    raise ValueError("expected seconds or HH:MM:SS (or D-HH:MM:SS)")


def parse_array(value: Any, max_size: int) -> tuple[int, ...]:
    """`8` (elements 0-7), "0-99" or "0-99:2"."""
    if isinstance(value, bool):
        raise ValueError("expected a count or a range like 0-99")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()):
        count = int(value)
        if not 1 <= count <= max_size:
            raise ValueError(f"{count} elements is outside 1-{max_size}")
        return tuple(range(count))
    match = ARRAY_RE.fullmatch(str(value).strip())
    if not match:
        raise ValueError("expected a count or a range like 0-99 or 0-99:2")
    start, end, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
    if end < start or step < 1:
        raise ValueError("the range must go upwards with a step of at least 1")
    size = (end - start) // step + 1
    if size > max_size:
        raise ValueError(f"{size} elements is more than the limit of {max_size}")
    return tuple(range(start, end + 1, step))


class _Collector:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


def _int(raw: Mapping[str, Any], key: str, default: int, err: _Collector, *, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        err.add(key, "must be a whole number")
        return default
    try:
        number = int(value)
    except ValueError:
        err.add(key, "must be a whole number")
        return default
    if number < low:
        err.add(key, f"{number} is below the minimum of {low}")
    elif number > high:
        err.add(key, f"{number} is more than the limit of {high}")
    return number


def _text(raw: Mapping[str, Any], key: str, default: str, err: _Collector) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        err.add(key, "must be text")
        return default
    return value.strip()


def validate(raw: Mapping[str, Any], ctx: SpecContext) -> JobSpec:
    err = _Collector()
    if not isinstance(raw, Mapping):
        raise SpecError({"non_field_errors": ["expected a JSON object"]})
    for unknown in sorted(set(raw) - KNOWN_FIELDS):
        err.add(unknown, "is not a job field")
    t = ctx.template

    team_slug = _text(raw, "team", "", err)
    team_id = ctx.teams.get(team_slug)
    if not team_slug and len(ctx.teams) == 1:
        team_id = next(iter(ctx.teams.values()))
    elif not team_slug:
        err.add("team", "is required: you are in several teams" if ctx.teams else "you are not in any team")
    elif team_id is None:
        err.add("team", f"you are not a member of team {team_slug!r}")

    name = _text(raw, "name", t.slug if t else "", err)
    if not NAME_RE.fullmatch(name):
        err.add("name", "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")

    kind = t.kind if t else _text(raw, "kind", "custom", err)
    if kind not in KINDS:
        err.add("kind", f"must be one of {', '.join(KINDS)}")

    image = _text(raw, "image", t.image if t else "", err)
    if image and not IMAGE_RE.fullmatch(image):
        err.add("image", "is not a valid container image reference (at most 300 characters)")

    script = raw.get("script", "") or ""
    if not isinstance(script, str):
        err.add("script", "must be text")
        script = ""
    elif not _is_utf8(script):
        err.add("script", "must be valid Unicode text (no lone surrogates)")
        script = ""
    elif "\x00" in script:
        err.add("script", "must not contain NUL characters")
    else:
        # Browsers send textarea text with CRLF line ends; bash would read each CR as part of a command.
        script = script.replace("\r\n", "\n").replace("\r", "\n")
        if len(script.encode()) > ctx.max_script_bytes:
            err.add("script", f"{len(script.encode())} bytes is more than the limit of {ctx.max_script_bytes} bytes")

    params = _params(raw, t, err)

    gpu_model = _text(raw, "gpu_model", t.gpu_model if t else "", err).lower()
    shape = ctx.grid.get(gpu_model)
    if gpu_model not in ctx.known_gpu_models:
        err.add("gpu_model", f"unknown GPU model {gpu_model!r}; known: {', '.join(sorted(ctx.known_gpu_models))}")
    elif t and t.allowed_gpu_models and whole_model(gpu_model) not in t.allowed_gpu_models:
        err.add("gpu_model", f"template {t.slug!r} allows only {', '.join(t.allowed_gpu_models)}")
    elif _fraction_given(raw):
        gpu_model = _shared_model(raw, gpu_model, ctx, err)
        shape = ctx.grid.get(gpu_model)
    if shape is None and not err.errors.keys() & {"gpu_model", "gpu_fraction"}:
        err.add("gpu_model", f"the grid has no {gpu_model} nodes")

    gpus_per_node, nodes = _gpu_shape(raw, t, shape, gpu_model, err)
    # The job's shape fills {nodes}, {gpus_per_node} and {gpus} in a template's command.
    shape_params = {"nodes": str(nodes), "gpus_per_node": str(gpus_per_node), "gpus": str(nodes * gpus_per_node)}
    command = _command(raw, t, {**params, **shape_params}, err)
    if not command and not script:
        err.add("command", "give a command (argument list) or a script")

    priority = _text(raw, "priority", "standard", err)
    if priority not in ctx.priorities:
        err.add("priority", f"must be one of {', '.join(sorted(ctx.priorities))}")
    elif team_id is not None and priority in ctx.class_teams:
        slug = next(s for s, pk in ctx.teams.items() if pk == team_id)
        if slug not in ctx.class_teams[priority]:
            usable = sorted(p for p in ctx.priorities if p not in ctx.class_teams or slug in ctx.class_teams[p])
            err.add(
                "priority",
                f"team {slug} may not use class {priority!r} (operators limit it to other teams); "
                f"it may use {', '.join(usable) or 'no class'}",
            )

    walltime_s = _walltime(raw, t, ctx, err)

    checkpoint_dir = _text(raw, "checkpoint_dir", t.checkpoint_dir if t else "", err)
    if checkpoint_dir and (not PATH_RE.fullmatch(checkpoint_dir) or "/../" in checkpoint_dir + "/"):
        err.add("checkpoint_dir", "must be an absolute path of letters, digits, '.', '_', '-' and '/' (at most 300)")

    env = _env(raw, err)
    checkpoint_interval = None
    if raw.get("checkpoint_interval") not in (None, ""):
        low, high = CHECKPOINT_INTERVAL_S
        checkpoint_interval = _int(raw, "checkpoint_interval", 0, err, low=low, high=high)

    array_indices = None
    if raw.get("array") not in (None, ""):
        try:
            array_indices = parse_array(raw["array"], ctx.max_array_size)
        except ValueError as exc:
            err.add("array", str(exc))

    if err.errors:
        raise SpecError(err.errors)
    assert team_id is not None
    return JobSpec(
        team_id=team_id,
        name=name,
        kind=kind,
        image=image,
        command=command,
        script=script,
        env=env,
        gpu_model=gpu_model,
        gpus_per_node=gpus_per_node,
        nodes=nodes,
        priority=priority,
        walltime_s=walltime_s,
        checkpoint_dir=checkpoint_dir,
        template_slug=t.slug if t else None,
        array_indices=array_indices,
        params=params,
        checkpoint_interval_s=checkpoint_interval,
    )


def _params(raw: Mapping[str, Any], t: TemplateInfo | None, err: _Collector) -> dict[str, str]:
    given = raw.get("params") or {}
    if not isinstance(given, Mapping):
        err.add("params", "must be an object of name: value")
        return {}
    defaults = dict(t.params) if t else {}
    for key, value in given.items():
        if key not in defaults:
            err.add("params", f"{key!r} is not a parameter of this template ({', '.join(sorted(defaults)) or 'none'})")
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            err.add("params", f"{key!r} must be text or a number")
        elif len(str(value)) > MAX_PARAM_CHARS:
            err.add("params", f"{key!r} is longer than {MAX_PARAM_CHARS} characters")
        else:
            defaults[key] = value
    return {k: str(v) for k, v in defaults.items()}


def _is_utf8(text: str) -> bool:
    """JSON can carry lone surrogates ('\\ud800') that no file, script or backend can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _command(raw: Mapping[str, Any], t: TemplateInfo | None, params: dict[str, str], err: _Collector) -> tuple[str, ...]:
    value = raw.get("command")
    if value is None:
        value = list(t.command) if t else []
    if isinstance(value, str):
        err.add("command", "must be a list of arguments, not one string (nothing is run through a shell)")
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        err.add("command", "must be a list of text arguments")
        return ()
    if len(value) > MAX_ARGS:
        err.add("command", f"{len(value)} arguments is more than the limit of {MAX_ARGS}")
        return ()
    out = []
    for arg in value:
        filled = PLACEHOLDER_RE.sub(lambda m: params.get(m.group(1), m.group(0)), arg)
        if "\x00" in filled or len(filled) > MAX_ARG_CHARS or not _is_utf8(filled):
            err.add("command", f"each argument must be valid text of at most {MAX_ARG_CHARS} characters without NUL")
            return ()
        missing = PLACEHOLDER_RE.findall(filled)
        if missing and t is not None:
            err.add("command", f"unknown placeholder {{{missing[0]}}}")
            return ()
        out.append(filled)
    return tuple(out)


def whole_model(gpu_model: str) -> str:
    """The physical GPU's model of a shared one (itself for a whole GPU or a model not in the catalogue)."""
    model = GPU_MODELS.get(gpu_model)
    return model.whole if model else gpu_model


def _fraction_given(raw: Mapping[str, Any]) -> bool:
    return raw.get("gpu_fraction") not in (None, "")


def _shared_model(raw: Mapping[str, Any], whole: str, ctx: SpecContext, err: _Collector) -> str:
    """The shared model that `gpu_fraction` of a `whole` GPU resolves to (`whole` itself for 1)."""
    value = raw["gpu_fraction"]
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        fraction = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        err.add("gpu_fraction", f"{value!r} is not a number; give a part of one GPU in (0, 1], such as 0.25 or 1/4")
        return whole
    if not 0 < fraction <= 1:
        err.add("gpu_fraction", f"{value} is outside (0, 1]: a job asks for part of one GPU, or for whole GPUs")
        return whole
    model = GPU_MODELS.get(whole)
    if model is not None and model.shares:
        err.add("gpu_fraction", f"{whole} is already a share of one {model.shares} GPU; give gpu_model {model.shares}")
        return whole
    for key in ("gpus_per_node", "nodes", "gpus"):
        if key in raw and str(raw[key]).strip() != "1":
            err.add("gpu_fraction", f"part of a GPU is one GPU on one node: leave out {key} (it is {raw[key]})")
            return whole
    if fraction == 1:
        return whole
    shared = shared_model_for(whole, fraction, set(ctx.grid))
    if shared is None:
        offered = [f"{m.key} ({m.fraction})" for m in shares_of(whole) if m.key in ctx.grid]
        err.add(
            "gpu_fraction",
            f"the grid has no shared {whole} GPU of at least {fraction}; "
            + (f"it has {', '.join(offered)}" if offered else f"none of its {whole} GPUs is shared"),
        )
        return whole
    return shared.key


def _gpu_shape(
    raw: Mapping[str, Any], t: TemplateInfo | None, shape: ModelShape | None, model: str, err: _Collector
) -> tuple[int, int]:
    node_max = shape.max_gpus_per_node if shape else 16
    per_node_cap = min(node_max, t.max_gpus_per_node) if t else node_max
    nodes_cap = t.max_nodes if t else 64
    if "gpus" in raw and "gpus_per_node" not in raw:
        total = _int(raw, "gpus", 1, err, low=1, high=per_node_cap * nodes_cap)
        if total <= per_node_cap:
            return total, 1
        if total % node_max:
            err.add("gpus", f"{total} GPUs span nodes; ask for a multiple of {node_max} (whole {model} nodes)")
        return node_max, max(1, math.ceil(total / node_max))
    gpus_per_node = _int(raw, "gpus_per_node", t.gpus_per_node if t else 1, err, low=1, high=per_node_cap)
    if shape and gpus_per_node > shape.max_gpus_per_node and "gpus_per_node" not in err.errors:
        err.add("gpus_per_node", f"{gpus_per_node} is more than the largest {model} node has ({node_max})")
    nodes = _int(raw, "nodes", t.nodes if t else 1, err, low=1, high=nodes_cap)
    if nodes > 1 and shape and gpus_per_node != shape.max_gpus_per_node and "gpus_per_node" not in err.errors:
        err.add("gpus_per_node", f"multi-node jobs take whole nodes: use {shape.max_gpus_per_node} GPUs per node")
    if shape and "nodes" not in err.errors and gpus_per_node * nodes > shape.total_gpus:
        err.add("nodes", f"{gpus_per_node * nodes} GPUs is more than the grid's {shape.total_gpus} {model} GPUs")
    return gpus_per_node, nodes


def _walltime(raw: Mapping[str, Any], t: TemplateInfo | None, ctx: SpecContext, err: _Collector) -> int:
    key = "walltime_s" if "walltime_s" in raw else "walltime"
    limit = min(ctx.max_walltime_s, t.max_walltime_s) if t else ctx.max_walltime_s
    try:
        seconds = parse_walltime(raw.get(key, t.walltime_s if t else 3600))
    except ValueError as exc:
        err.add(key, str(exc))
        return 0
    if seconds < 60:
        err.add(key, "must be at least 00:01:00")
    elif seconds > limit:
        err.add(key, f"{format_walltime(seconds)} is over the limit of {format_walltime(limit)}")
    return seconds


def _env(raw: Mapping[str, Any], err: _Collector) -> dict[str, str]:
    env = raw.get("env") or {}
    if not isinstance(env, Mapping):
        err.add("env", "must be an object of NAME: value")
        return {}
    if len(env) > MAX_ENV:
        err.add("env", f"{len(env)} variables is more than the limit of {MAX_ENV}")
        return {}
    for key, value in env.items():
        if not ENV_KEY_RE.fullmatch(str(key)):
            err.add("env", f"{str(key)[:40]!r} is not a valid variable name (A-Z, 0-9, _)")
        elif not isinstance(value, str) or len(value) > MAX_ARG_CHARS or "\x00" in value or not _is_utf8(value):
            err.add("env", f"{key} must be text of at most {MAX_ARG_CHARS} characters")
    return {str(k): str(v) for k, v in env.items()}
