"""Quota arithmetic: GPUs each team holds per model against its guarantee and limit.

The ledger is the one place that decides whether a job may be admitted as far as quotas go;
placement on nodes is decided elsewhere. Holding GPUs beyond the guarantee is "borrowing".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from jobs.policy.model import PendingJob, PriorityClassSpec, Quota, Reason, RunningJob

Key = tuple[str, str]  # (team, gpu model)


# (reason or None when quotas let the job in, detail, borrowing): a tuple, as it is built per job.
QuotaVerdict = tuple[Reason | None, str, bool]
OK_WITHIN: QuotaVerdict = (None, "", False)
OK_BORROWING: QuotaVerdict = (None, "", True)


class Ledger:
    """GPUs held per (team, model), including this cycle's admissions and preemptions."""

    def __init__(self, quotas: Iterable[Quota], running: Iterable[RunningJob]) -> None:
        self.quotas: dict[Key, Quota] = {(q.team, q.gpu_model): q for q in quotas}
        self.used: dict[Key, int] = defaultdict(int)
        self.team_gpus: dict[str, int] = defaultdict(int)
        used, team_gpus = self.used, self.team_gpus
        for job in running:
            gpus = sum(job.placement.values())  # job.gpus, without the property call per job
            used[(job.team, job.gpu_model)] += gpus
            team_gpus[job.team] += gpus
        # Unlendable idle guarantee per model, and the part of it each department's teams may still use.
        self.protected: dict[str, int] = defaultdict(int)
        self.protected_in: dict[Key, int] = defaultdict(int)  # (department, model)
        self.department: dict[str, str] = {q.team: q.department for q in self.quotas.values() if q.department}
        for quota in self.quotas.values():
            if not quota.lendable:
                idle = self._idle_guarantee(quota)
                self.protected[quota.gpu_model] += idle
                if quota.department:
                    self.protected_in[(quota.department, quota.gpu_model)] += idle

    def _idle_guarantee(self, quota: Quota) -> int:
        return max(0, quota.guarantee - self.used[(quota.team, quota.gpu_model)])

    def quota(self, team: str, model: str) -> Quota | None:
        return self.quotas.get((team, model))

    def within_guarantee(self, job: PendingJob) -> bool:
        quota = self.quotas.get((job.team, job.gpu_model))
        return quota is not None and self.used[(job.team, job.gpu_model)] + job.gpus <= quota.guarantee

    def is_borrowing(self, team: str, model: str) -> bool:
        quota = self.quotas.get((team, model))
        return quota is None or self.used[(team, model)] > quota.guarantee

    def verdict(self, job: PendingJob, spec: PriorityClassSpec, free_of_model: int) -> QuotaVerdict:
        quota = self.quotas.get((job.team, job.gpu_model))
        if quota is None:
            return Reason.QUOTA, f"team {job.team} has no {job.gpu_model} quota", False
        used = self.used[(job.team, job.gpu_model)]
        if used + job.gpus <= quota.guarantee:
            return OK_WITHIN
        if not spec.may_borrow:
            detail = f"{spec.name} jobs must fit in the guarantee: team uses {used} of {quota.guarantee} guaranteed {job.gpu_model} GPUs, this job needs {job.gpus}"
            return Reason.QUOTA, detail, False
        if used + job.gpus > quota.limit:
            return (
                Reason.QUOTA,
                f"team uses {used} of its {quota.limit}-GPU {job.gpu_model} limit; this job needs {job.gpus}",
                True,
            )
        refusal = self.protected_refusal(job.gpu_model, job.gpus, free_of_model, job.team)
        return OK_BORROWING if refusal is None else (Reason.QUOTA, refusal, True)

    def protected_refusal(self, model: str, gpus: int, free_of_model: int, team: str = "") -> str | None:
        """Why borrowing `gpus` would eat into other teams' unlendable idle guarantee, or None if it would not.

        The unlendable guarantee of `team`'s own department is lent to it (lending first inside the department).
        """
        protected = self.protected[model]
        department = self.department.get(team)
        if department:
            protected -= self.protected_in[(department, model)]
        if protected > 0 and free_of_model - gpus < protected:
            whose = "other departments' teams'" if department else "other teams'"
            return f"{protected} of the {free_of_model} free {model} GPUs are {whose} unlendable guarantee"
        return None

    def refused_by_own_quota(self, job: PendingJob, spec: PriorityClassSpec) -> bool:
        """Whether the team's own quota and holdings refuse the job, whatever the other teams do."""
        quota = self.quotas.get((job.team, job.gpu_model))
        if quota is None:
            return True
        need = self.used[(job.team, job.gpu_model)] + job.gpus
        return need > quota.guarantee and (not spec.may_borrow or need > quota.limit)

    def charge(self, team: str, model: str, gpus: int) -> None:
        """Book `gpus` (negative to release) and keep the unlendable idle guarantee up to date."""
        quota = self.quotas.get((team, model))
        before = self._idle_guarantee(quota) if quota and not quota.lendable else 0
        self.used[(team, model)] += gpus
        self.team_gpus[team] += gpus
        if quota and not quota.lendable:
            change = self._idle_guarantee(quota) - before
            self.protected[model] += change
            if quota.department:
                self.protected_in[(quota.department, model)] += change

    def department_mates(self, team: str) -> frozenset[str]:
        """The other teams of `team`'s department (none without one)."""
        department = self.department.get(team)
        if not department:
            return frozenset()
        return frozenset(t for t, d in self.department.items() if d == department and t != team)

    def violations(self) -> list[str]:
        return [
            f"{team}/{model}: {used} > limit {self.quotas[(team, model)].limit}"
            for (team, model), used in self.used.items()
            if (team, model) in self.quotas and used > self.quotas[(team, model)].limit
        ]


def usage_key(usage: Mapping[str, float], ledger: Ledger, team: str, weight: float, half_life_s: float) -> float:
    """Fair-share position of a team: decayed usage plus what it holds now, per unit of weight.

    GPUs held now count as one half-life of use, so a team that was just given GPUs moves back in
    line at once instead of only after its usage history catches up.
    """
    return (usage.get(team, 0.0) + ledger.team_gpus[team] * half_life_s) / weight
