"""Pure rules of the simulated grid: pool layout, job outcomes, log lines and GPU telemetry.

No ORM, no clock, no I/O: every function takes the time and the facts it needs and returns plain
data, so the same inputs always give the same grid.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cluster.gpus import GPU_MODELS, GpuModel

AMBIENT_C = 31.0
LOAD_RISE_C = 42.0
OVERHEAT_RISE_C = 38.0
THERMAL_TAU_S = 20.0


class PoolSpecError(ValueError):
    """SIM_POOLS could not be parsed."""


@dataclass(frozen=True)
class PoolSpec:
    """One simulated pool: NAME:KIND:MODEL:NODESxGPUS."""

    name: str
    kind: str
    gpu_model: str
    nodes: int
    gpus_per_node: int

    def node_names(self, count: int | None = None) -> list[str]:
        return [f"{self.name}-{i:02d}" for i in range(1, (self.nodes if count is None else count) + 1)]


def parse_pools(text: str) -> list[PoolSpec]:
    pools: list[PoolSpec] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split(":")
        if len(fields) != 4 or "x" not in fields[3]:
            raise PoolSpecError(f"SIM_POOLS entry {item!r}: expected NAME:KIND:MODEL:NODESxGPUS")
        name, kind, model, shape = fields
        if kind not in {"onprem", "cloud"}:
            raise PoolSpecError(f"SIM_POOLS entry {item!r}: kind must be onprem or cloud")
        if model not in GPU_MODELS:
            raise PoolSpecError(f"SIM_POOLS entry {item!r}: unknown GPU model {model!r}")
        nodes_text, gpus_text = shape.split("x", 1)
        try:
            nodes, gpus = int(nodes_text), int(gpus_text)
        except ValueError:
            raise PoolSpecError(f"SIM_POOLS entry {item!r}: NODESxGPUS must be two whole numbers") from None
        most = int(16 / GPU_MODELS[model].fraction)  # 16 GPUs a node, or their slices (a MIG 1g: 7 a GPU)
        if nodes < 0 or not 1 <= gpus <= most:
            raise PoolSpecError(f"SIM_POOLS entry {item!r}: need nodes >= 0 and 1-{most} {model} GPUs per node")
        pools.append(PoolSpec(name, kind, model, nodes, gpus))
    if len({p.name for p in pools}) != len(pools):
        raise PoolSpecError("SIM_POOLS: pool names must be unique")
    return pools


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the given parts."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Outcome:
    """How a simulated job will end, decided when it is submitted."""

    runtime_s: float  # simulated seconds
    state: str  # succeeded | failed
    exit_code: int
    reason: str
    load: float  # mean GPU load 0-1 while it runs
    memory_fraction: float


def decide_outcome(portal_job_id: int, walltime_s: int, failure_rate: float) -> Outcome:
    roll = _unit("outcome", portal_job_id)
    load = 0.03 if _unit("idle", portal_job_id) < 0.05 else 0.62 + 0.36 * _unit("load", portal_job_id)
    memory_fraction = 0.25 + 0.7 * _unit("memory", portal_job_id)
    if roll < failure_rate * 0.25:
        return Outcome(float(walltime_s), "failed", 0, "TimeLimit", load, memory_fraction)
    runtime = walltime_s * (0.35 + 0.6 * _unit("runtime", portal_job_id))
    if roll < failure_rate:
        code, reason = (137, "OutOfMemory") if roll < failure_rate * 0.5 else (1, "NonZeroExitCode")
        return Outcome(runtime * 0.6, "failed", code, reason, load, memory_fraction)
    return Outcome(runtime, "succeeded", 0, "", load, memory_fraction)


def script_syntax_error(script: str) -> str | None:
    """What `bash -n` says is wrong with a batch script (its first complaint), or None when bash would run it.
    Without bash on the machine nothing can be said, and the script is taken as it is."""
    bash = shutil.which("bash")
    if bash is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sh", encoding="utf-8") as file:
        file.write(script)
        file.flush()
        done = subprocess.run([bash, "-n", file.name], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode == 0:
        return None
    first = (done.stderr.strip().splitlines() or ["syntax error"])[0]
    return "bash -n: " + first.replace(file.name, "script")


def log_lines(
    kind: str, name: str, portal_job_id: int, progress: float, final: str | None, command: Sequence[str] = ()
) -> list[str]:
    """Every log line a job has written once it is `progress` (0-1) of the way through; the lines follow the
    job's own arguments (`--epochs=3` trains 3 epochs, `-s 10 -e 20` renders frames 10-20)."""
    progress = max(0.0, min(1.0, progress))
    plan = LogPlan.from_command(command)
    steps = int(progress * 50)
    lines = [f"[portal] job {portal_job_id} ({name}) started"]
    for step in range(1, steps + 1):
        lines.append(_progress_line(kind, portal_job_id, step, plan))
    if final is not None:
        lines.append(f"[portal] job {portal_job_id} {final}")
    return lines


@dataclass(frozen=True)
class LogPlan:
    """What a job's command says about its work, for the simulated log."""

    epochs: int = 10
    frame_start: int = 1
    frame_end: int = 50
    nsteps: int = 500_000

    @classmethod
    def from_command(cls, command: Sequence[str]) -> LogPlan:
        args = list(command)

        def value(*flags: str) -> int | None:
            for i, arg in enumerate(args):
                for flag in flags:
                    if arg.startswith(flag + "=") and arg[len(flag) + 1 :].isascii() and arg[len(flag) + 1 :].isdigit():
                        return int(arg[len(flag) + 1 :])
                    if arg == flag and i + 1 < len(args) and args[i + 1].isascii() and args[i + 1].isdigit():
                        return int(args[i + 1])
            return None

        start = value("-s", "--frame-start")
        end = value("-e", "--frame-end")
        epochs = value("--epochs", "--num-epochs", "--num_epochs")
        nsteps = value("-nsteps", "--nsteps")
        first = start if start is not None else cls.frame_start
        last = end if end is not None and end >= first else first + cls.frame_end - cls.frame_start
        return cls(
            epochs=max(1, min(epochs or cls.epochs, 100_000)),
            frame_start=first,
            frame_end=last,
            nsteps=max(1, nsteps or cls.nsteps),
        )


def _progress_line(kind: str, job: int, step: int, plan: LogPlan = LogPlan()) -> str:
    jitter = _unit("log", job, step)
    if kind == "training":
        loss = 2.4 * math.exp(-step / 18) + 0.15 + 0.05 * jitter
        epoch = min(plan.epochs, 1 + (step - 1) * plan.epochs // 50)
        return (
            f"[rank0] epoch {epoch}/{plan.epochs} step {step * 200} loss {loss:.4f} throughput {780 + int(90 * jitter)} samples/s"
        )
    if kind == "rendering":
        frames = plan.frame_end - plan.frame_start + 1
        frame = plan.frame_start + min(frames - 1, (step - 1) * frames // 50)
        return f"Fra:{frame} Mem:{1.8 + jitter:.2f}G | Time:00:{10 + int(20 * jitter):02d}.{int(jitter * 100):02d} | Finished"
    if kind == "simulation":
        done = plan.nsteps * step // 50
        return f"step {done:>8} of {plan.nsteps}, {done * 2 // 1000} ps done; performance {92 + 12 * jitter:.1f} ns/day"
    return f"progress {step * 2}%"


@dataclass(frozen=True)
class BusySpan:
    """A job holding one GPU from `start` to `end` (None: still running), in seconds since the epoch."""

    start: float
    end: float | None
    load: float
    memory_fraction: float
    portal_job_id: int


@dataclass(frozen=True)
class GpuSample:
    """One GPU's telemetry at one instant, in dcgm-exporter's units."""

    hostname: str
    gpu: int
    uuid: str
    model: str
    utilization: float  # percent
    temperature_c: float
    power_w: float
    fb_used_mib: float
    fb_free_mib: float
    engine_active: float  # 0-1
    xid_errors: int
    portal_job_id: int | None


def gpu_uuid(hostname: str, gpu: int) -> str:
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{hostname}.gpu{gpu}"))


def _load_at(spans: Iterable[BusySpan], t: float) -> BusySpan | None:
    for span in spans:
        if span.start <= t and (span.end is None or t < span.end):
            return span
    return None


def _target_temperature(spans: list[BusySpan], t: float, overheat_since: float | None) -> float:
    span = _load_at(spans, t)
    target = AMBIENT_C + (LOAD_RISE_C * span.load if span else 0.0)
    if overheat_since is not None and t >= overheat_since:
        target += OVERHEAT_RISE_C
    return target


def temperature(spans: list[BusySpan], t: float, overheat_since: float | None) -> float:
    """First-order lag toward the load's target temperature, replayed over the last few time constants."""
    window_start = t - 6 * THERMAL_TAU_S
    changes = sorted(
        {window_start, t}
        | {p for s in spans for p in (s.start, s.end) if p is not None and window_start < p < t}
        | ({overheat_since} if overheat_since is not None and window_start < overheat_since < t else set())
    )
    temp = _target_temperature(spans, window_start, overheat_since)
    for a, b in itertools.pairwise(changes):
        target = _target_temperature(spans, a, overheat_since)
        temp = target + (temp - target) * math.exp(-(b - a) / THERMAL_TAU_S)
    return temp


def gpu_sample(
    model: GpuModel,
    hostname: str,
    gpu: int,
    t: float,
    spans: list[BusySpan],
    overheat_since: float | None = None,
    xid_errors: int = 0,
) -> GpuSample:
    span = _load_at(spans, t)
    noise = _unit("noise", hostname, gpu, int(t)) - 0.5
    if span is not None:
        util = max(0.0, min(100.0, span.load * 100 + noise * 8))
        used = model.memory_mib * span.memory_fraction
    else:
        util, used = 0.0, 420.0 + 40 * noise
    temp = temperature(spans, t, overheat_since) + noise
    power = model.idle_w + (model.tdp_w - model.idle_w) * util / 100
    return GpuSample(
        hostname=hostname,
        gpu=gpu,
        uuid=gpu_uuid(hostname, gpu),
        model=model.product,
        utilization=round(util, 1),
        temperature_c=round(temp, 1),
        power_w=round(power, 3),
        fb_used_mib=round(used),
        fb_free_mib=round(model.memory_mib - used),
        engine_active=round(util / 100 * 0.97, 4),
        xid_errors=xid_errors,
        portal_job_id=span.portal_job_id if span else None,
    )


# --- checkpoints: what a preempted or killed job resumes from -------------------------------------


def checkpoint_progress(done_before_s: float, elapsed_s: float, every_s: float, total_s: float) -> float:
    """The work (simulated seconds) saved in a job's last checkpoint, `elapsed_s` simulated seconds into an
    attempt that started from `done_before_s`: the job writes one every `every_s` of work, and a last one when
    its work is done. No checkpointing (`every_s` <= 0): what it resumed from, nothing more."""
    if every_s <= 0:
        return done_before_s
    if done_before_s + elapsed_s >= total_s:
        return total_s
    return min(total_s, done_before_s + math.floor(max(0.0, elapsed_s) / every_s) * every_s)


def resumed_work(total_s: float, checkpoint_s: float | None) -> float:
    """Work already done when a job starts (again) from a checkpoint at `checkpoint_s`; a checkpoint
    outside the job's work (another job's, or a corrupt one) counts as none."""
    if checkpoint_s is None or not 0.0 <= checkpoint_s <= total_s:
        return 0.0
    return checkpoint_s
