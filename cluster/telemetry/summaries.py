"""What one telemetry cycle decides from: per node for the guard, per job for idleness. Pure.

Two ways in, one result (`CycleView`):
- `view_of_samples`: from every GPU's sample (the simulator, or Prometheus without the summary
  rules), with this cycle's efficiency tallies, since nothing else keeps them;
- `summary_view`: from the summaries Prometheus records (names.summary_rules), a few series per
  node and per job; the efficiency tallies then come from Prometheus' history
  (`tallies_of`, read by the accounting pass over every scrape, not one sample per cycle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cluster.safeguards import EfficiencyTally, GpuReading, Seen, activity, tally
from cluster.simulator.model import GpuSample
from cluster.telemetry.convert import Attribution, GuardView, attribute, labelled_hosts, present
from cluster.telemetry.convert import view_of_samples as guard_view_of_samples
from cluster.telemetry.errors import TelemetryUnavailable
from cluster.telemetry.names import (
    CYCLE_SERIES,
    IDLE_LABEL,
    JOB_GPUS,
    JOB_IDLE_READINGS,
    JOB_MEMORY,
    JOB_READINGS,
    JOB_UTILIZATION,
    LOADED,
    NODE_HOTTEST,
    NODE_REPORTING,
    NODE_XID,
    SUMMARY_GROUP,
    MetricNames,
)


@dataclass(frozen=True)
class JobSeen:
    """One job's GPUs in one cycle, added up over its nodes."""

    gpus: int  # GPUs that reported a temperature
    complete: bool  # each of them reported an activity
    idle: bool  # and every activity is below the idle threshold

    def seen(self, held: int) -> Seen:
        if not self.complete or self.gpus < held:
            return Seen.GAP
        return Seen.IDLE if self.idle else Seen.BUSY

    def __add__(self, other: JobSeen) -> JobSeen:
        return JobSeen(self.gpus + other.gpus, self.complete and other.complete, self.idle and other.idle)


NOTHING_SEEN = JobSeen(0, False, False)


@dataclass(frozen=True)
class CycleView:
    """One cycle's reading of the grid.

    `tallies`: this cycle's efficiency sums per job when they come with the view (samples); None
    when the accounting pass reads them from Prometheus' history. `samples`: every GPU's sample
    when the view was made from them (what live pages are sent), else None.
    """

    guard: GuardView
    jobs: Mapping[int, JobSeen]
    gpus: int
    tallies: Mapping[int, EfficiencyTally] | None = None
    samples: list[GpuSample] | None = None


def view_of_samples(samples: list[GpuSample], threshold: float) -> CycleView:
    """The view every GPU's sample gives: the guard's readings, each job's GPUs, this cycle's tallies."""
    jobs: dict[int, JobSeen] = {}
    readings: dict[int, list[GpuReading]] = {}
    for s in samples:
        if s.portal_job_id is None:
            continue
        act = activity(present(s.engine_active), present(s.utilization))
        one = JobSeen(1, act is not None, act is not None and act < threshold)
        jobs[s.portal_job_id] = jobs[s.portal_job_id] + one if s.portal_job_id in jobs else one
        mine = readings.setdefault(s.portal_job_id, [])
        if act is not None and present(s.utilization) is not None and present(s.fb_used_mib) is not None:
            mine.append(GpuReading(s.utilization, act, s.fb_used_mib))
    tallies = {job: tally(EfficiencyTally(), found, threshold) for job, found in readings.items()}
    return CycleView(guard_view_of_samples(samples, -math.inf), jobs, len(samples), tallies, samples)


class SummariesMissing(Exception):
    """Prometheus holds no summaries written for this idle threshold (rules not loaded, or others)."""


def cycle_query() -> str:
    """Everything a cycle reads, in one selector: nothing to aggregate or join when it is asked. The
    rules' last run time comes with it (`part="loaded_at"`), so a stalled rule group is stale."""
    wanted = "|".join(CYCLE_SERIES)
    return f'{{__name__=~"{wanted}"}} or label_replace(timestamp({LOADED}), "part", "loaded_at", "", "")'


def summary_view(
    rows: Iterable[Mapping[str, Any]], names: MetricNames, how: Attribution, threshold: float, now: float, stale_after_s: float
) -> CycleView:
    """The answer to `cycle_query` as a view.

    Raises SummariesMissing when no summaries for `threshold` are there, and TelemetryUnavailable
    when the rules last ran more than `stale_after_s` ago: stale summaries decide nothing. Within
    a run, a node whose scrape failed has no series (Prometheus marks them stale at once).
    """
    mark = f"{threshold:g}"
    rows = list(rows)
    runs = [float(r["value"][1]) for r in rows if r["metric"].get("part") == "loaded_at" and r["metric"].get(IDLE_LABEL) == mark]
    if not runs:
        raise SummariesMissing(f"Prometheus has no summaries recorded for {IDLE_LABEL}={mark} (rules in {SUMMARY_GROUP})")
    age = now - max(runs)
    if age > stale_after_s:
        raise TelemetryUnavailable(f"the recorded summaries are {age:.0f} s old (stale after {stale_after_s:g} s)")
    hot: dict[str, dict[int, float]] = {}
    xid: dict[str, dict[int, int]] = {}
    reporting: dict[str, int] = {}
    jobs: dict[int, JobSeen] = {}
    labelled = labelled_hosts((r["metric"] for r in rows if r["metric"].get("__name__") == JOB_GPUS), names)
    for row in rows:
        metric = row["metric"]
        name = metric.get("__name__")
        host = names.host(metric)
        if host is None:
            continue
        value = float(row["value"][1])
        if name == NODE_REPORTING:
            reporting[host] = reporting.get(host, 0) + int(value)
        elif name in (NODE_HOTTEST, NODE_XID):
            index = metric.get(names.gpu_label, "")
            if not index.isdigit() or math.isnan(value):
                continue
            if name == NODE_HOTTEST:
                hot.setdefault(host, {})[int(index)] = value
            elif int(value):
                xid.setdefault(host, {})[int(index)] = int(value)
        elif name == JOB_GPUS and metric.get(IDLE_LABEL) == mark:
            job = attribute(metric, host, -1, names, how, labelled)
            if job is None:
                continue
            state = metric.get("state")
            one = JobSeen(int(value), state != "partial", state == "idle")
            jobs[job] = jobs[job] + one if job in jobs else one
    return CycleView(GuardView(-math.inf, hot, xid, reporting), jobs, sum(reporting.values()))


def tallies_of(rows: Iterable[Mapping[str, Any]], names: MetricNames, how: Attribution) -> dict[int, EfficiencyTally]:
    """Per job, the sums of its summaries over a window (`sum_over_time`, `max_over_time` of
    names.JOB_TALLIES, each row naming its series in `tally`), added up over its nodes."""
    out: dict[int, list[float]] = {}
    column = {JOB_READINGS: 0, JOB_UTILIZATION: 1, JOB_IDLE_READINGS: 2, JOB_MEMORY: 3}
    rows = list(rows)
    labelled = labelled_hosts((r["metric"] for r in rows), names)
    for row in rows:
        metric = row["metric"]
        i = column.get(metric.get("tally", ""))
        host = names.host(metric)
        if i is None or host is None:
            continue
        job = attribute(metric, host, -1, names, how, labelled)
        if job is None:
            continue
        value = float(row["value"][1])
        sums = out.setdefault(job, [0.0, 0.0, 0.0, 0.0])
        sums[i] = max(sums[i], value) if i == 3 else sums[i] + value
    return {job: EfficiencyTally(round(s[0]), s[1], round(s[2]), s[3]) for job, s in out.items()}
