"""Quotas and priority classes compiled to Slurm accounts and QOS, and the diff against Slurm (pure).

- Department -> parent account of its teams' accounts, with their shares together (Slurm's account
  tree: its fair-share tree splits the department's share among its teams).
- Team -> account: `Fairshare` is the sum of the team's quota weights (Slurm keeps one share per
  association, not per GPU model); `GrpTRES=gres/gpu:<model>=<limit>` per quota, so Slurm itself
  caps the team's GPUs of each model; every member's Unix account gets an association in it.
- Priority class -> QOS of the same name, on the accounts of the teams that may use it (all, unless
  operators limited it to some teams): `Priority` is the class's rank (Slurm priorities are
  not negative, so below 0 becomes 0); a class that is not preemptible may preempt every
  preemptible class of a lower rank; a preemptible class is cancelled after `GraceTime` (the job
  gets SIGTERM first, to checkpoint) and the portal submits it again.

No ORM and no I/O here: the management command reads the portal and Slurm and runs the commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from cluster.gpus import slurm_tres

UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class TeamInput:
    """A team as the compiler needs it: slug, members' Unix names, and (model, limit, weight) quotas."""

    slug: str
    members: tuple[str, ...]
    quotas: tuple[tuple[str, int, int], ...]
    department: str = ""  # its department's slug: the team's account goes under the department's


@dataclass(frozen=True)
class ClassInput:
    """A priority class: name, rank, preemptible, and the teams it is limited to (empty: every team)."""

    name: str
    rank: int
    preemptible: bool
    teams: frozenset[str] = frozenset()


@dataclass(frozen=True)
class QosSpec:
    """A Slurm QOS as the portal wants it."""

    name: str
    priority: int
    preempt: tuple[str, ...] = ()
    preempt_mode: str = "cluster"
    grace_s: int = 0


@dataclass(frozen=True)
class AccountSpec:
    """A Slurm account (with its users) as the portal wants it."""

    name: str
    fairshare: int
    grp_tres: tuple[tuple[str, int], ...]
    qos: tuple[str, ...]
    default_qos: str
    users: tuple[str, ...] = ()
    parent: str = "root"


@dataclass(frozen=True)
class SlurmPlan:
    """Everything the portal manages in Slurm's accounting."""

    qos: tuple[QosSpec, ...]
    accounts: tuple[AccountSpec, ...]


@dataclass(frozen=True)
class Change:
    """One step to bring Slurm in line: what it does in words, and the sacctmgr arguments."""

    summary: str
    sacctmgr: tuple[str, ...]


@dataclass
class SlurmState:
    """What Slurm has now, parsed from `sacctmgr show` (see `parse_qos`, `parse_associations`,
    `parse_organizations`)."""

    qos: dict[str, QosSpec] = field(default_factory=dict)
    accounts: dict[str, AccountSpec] = field(default_factory=dict)
    managed: frozenset[str] = frozenset()  # accounts whose Organization says the portal made them


# The Organization of every account the portal makes or adopts: only such accounts are ever removed
# (when their team or department is gone); accounts an administrator made stay untouched.
PORTAL_ORGANIZATION = "gpu-grid-portal"


# --- compile -------------------------------------------------------------------------------------


def compile_qos(classes: list[ClassInput], grace_s: int) -> tuple[QosSpec, ...]:
    specs = []
    for c in sorted(classes, key=lambda c: (-c.rank, c.name)):
        victims = () if c.preemptible else tuple(sorted(o.name for o in classes if o.preemptible and o.rank < c.rank))
        mode, grace = ("cancel", grace_s) if c.preemptible else ("cluster", 0)
        specs.append(QosSpec(c.name, max(0, c.rank), victims, mode, grace))
    return tuple(specs)


def default_qos(classes: list[ClassInput]) -> str:
    names = {c.name for c in classes}
    if "standard" in names:
        return "standard"
    return min(classes, key=lambda c: (c.rank, c.name)).name if classes else "normal"


def check_members(team: TeamInput) -> None:
    for user in team.members:
        if not UNIX_NAME.match(user):
            raise ValueError(f"team {team.slug}: member {user[:40]!r} has no valid Unix account name (set unix_username)")


def _grp_tres(quotas: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, int], ...]:
    """GrpTRES per quota; time-sliced models all count as Slurm's one `gres/shard`, so their limits add up
    there (the portal still holds each model to its own limit)."""
    limits: dict[str, int] = {}
    for model, limit, _ in quotas:
        limits[slurm_tres(model)] = limits.get(slurm_tres(model), 0) + limit
    return tuple(sorted(limits.items()))


def compile_accounts(teams: list[TeamInput], classes: list[ClassInput]) -> tuple[AccountSpec, ...]:
    for team in teams:
        check_members(team)
    slugs = {t.slug for t in teams}
    clashes = sorted({t.department for t in teams if t.department} & slugs)
    if clashes:
        raise ValueError(f"department {clashes[0]!r} has the name of a team; Slurm accounts share one namespace")
    specs = []
    for team in sorted(teams, key=lambda t: t.slug):
        usable = [c for c in classes if not c.teams or team.slug in c.teams]  # an account may use only its classes' QOS
        specs.append(
            AccountSpec(
                name=team.slug,
                fairshare=max(1, sum(weight for _, _, weight in team.quotas)),
                grp_tres=_grp_tres(team.quotas),
                qos=tuple(sorted(c.name for c in usable)) or ("normal",),
                default_qos=default_qos(usable),
                users=tuple(sorted(set(team.members))),
                parent=team.department or "root",
            )
        )
    return (*_department_accounts(specs, classes), *specs)  # a parent account before its children


def _department_accounts(teams: list[AccountSpec], classes: list[ClassInput]) -> list[AccountSpec]:
    """A parent account per department: its teams' shares together, and every QOS any of them may use."""
    by_department: dict[str, list[AccountSpec]] = {}
    for team in teams:
        if team.parent != "root":
            by_department.setdefault(team.parent, []).append(team)
    accounts = []
    for name, members in sorted(by_department.items()):
        qos = tuple(sorted({q for team in members for q in team.qos}))
        usable = [c for c in classes if c.name in qos]
        accounts.append(AccountSpec(name, sum(t.fairshare for t in members), (), qos, default_qos(usable) if usable else qos[0]))
    return accounts


def compile_plan(teams: list[TeamInput], classes: list[ClassInput], grace_s: int) -> SlurmPlan:
    if grace_s < 0:
        raise ValueError(f"grace_s: must be 0 or more seconds (got {grace_s})")
    return SlurmPlan(compile_qos(classes, grace_s), compile_accounts(teams, classes))


# --- read what Slurm has ---------------------------------------------------------------------------


def duration_s(text: str) -> int:
    """sacctmgr durations: `[days-]hh:mm:ss`, `mm:ss`, or empty."""
    if not text:
        return 0
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def parse_tres(text: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if value.isdigit():
            pairs.append((name, int(value)))
    return tuple(sorted(pairs))


def parse_qos(text: str) -> dict[str, QosSpec]:
    """`sacctmgr -n -P show qos format=name,priority,preempt,preemptmode,gracetime`."""
    found = {}
    for line in filter(None, text.splitlines()):
        name, priority, preempt, mode, grace = (line.split("|") + [""] * 5)[:5]
        found[name] = QosSpec(
            name, int(priority or 0), tuple(sorted(filter(None, preempt.split(",")))), mode or "cluster", duration_s(grace)
        )
    return found


def parse_organizations(text: str) -> frozenset[str]:
    """`sacctmgr -n -P show account format=account,organization`: the accounts the portal manages."""
    managed = set()
    for line in filter(None, text.splitlines()):
        account, _, organization = line.partition("|")
        if organization.strip() == PORTAL_ORGANIZATION:
            managed.add(account)
    return frozenset(managed)


def parse_associations(text: str) -> dict[str, AccountSpec]:
    """`sacctmgr -n -P show assoc format=account,user,fairshare,grptres,qos,defaultqos,parentname`."""
    accounts: dict[str, AccountSpec] = {}
    users: dict[str, list[str]] = {}
    for line in filter(None, text.splitlines()):
        account, user, share, grp_tres, qos, default, parent = (line.split("|") + [""] * 7)[:7]
        if user:
            users.setdefault(account, []).append(user)
        else:
            fairshare = int(share) if share.isdigit() else 1
            accounts[account] = AccountSpec(
                account, fairshare, parse_tres(grp_tres), tuple(sorted(filter(None, qos.split(",")))), default,
                parent=parent or "root",
            )  # fmt: skip
    return {name: replace(a, users=tuple(sorted(users.get(name, [])))) for name, a in accounts.items()}


# --- diff ----------------------------------------------------------------------------------------------


def qos_settings(spec: QosSpec) -> tuple[str, ...]:
    return (
        f"Priority={spec.priority}",
        f"Preempt={','.join(spec.preempt)}",  # empty clears the list
        f"PreemptMode={spec.preempt_mode}",
        f"GraceTime={spec.grace_s}",
    )


def account_settings(spec: AccountSpec, current: AccountSpec | None) -> tuple[str, ...]:
    tres = dict(spec.grp_tres)
    for name, _ in current.grp_tres if current else ():
        tres.setdefault(name, -1)  # -1 clears a limit the portal no longer has
    # Only a move names the parent: sacctmgr ignores a whole modify whose Parent= is the current one
    # ("Nothing modified"), and a new account is added under its parent (`diff_accounts`).
    moved = (f"Parent={spec.parent}",) if current is not None and current.parent != spec.parent else ()
    return (
        f"Fairshare={spec.fairshare}",
        f"GrpTRES={','.join(f'{n}={v}' for n, v in sorted(tres.items()))}" if tres else "GrpTRES=gres/gpu=-1",
        f"QOS={','.join(spec.qos)}",
        f"DefaultQOS={spec.default_qos}",
        *moved,
    )


def diff_qos(plan: SlurmPlan, state: SlurmState) -> list[Change]:
    changes = [Change(f"add QOS {q.name}", ("add", "qos", q.name)) for q in plan.qos if q.name not in state.qos]
    for q in plan.qos:
        have = state.qos.get(q.name)
        if have is None or have != q:
            what = (
                "set"
                if have is None
                else f"change (now priority {have.priority}, preempts {','.join(have.preempt) or '-'}, {have.preempt_mode}, grace {have.grace_s}s)"
            )
            changes.append(
                Change(
                    f"QOS {q.name}: {what} -> {', '.join(qos_settings(q))}",
                    ("modify", "qos", "where", f"name={q.name}", "set", *qos_settings(q)),
                )
            )
    return changes


def same_account(want: AccountSpec, have: AccountSpec) -> bool:
    return (want.fairshare, want.grp_tres, want.qos, want.default_qos, want.parent) == (
        have.fairshare,
        have.grp_tres,
        have.qos,
        have.default_qos,
        have.parent,
    )


def diff_accounts(plan: SlurmPlan, state: SlurmState) -> list[Change]:
    changes = []
    for a in plan.accounts:
        have = state.accounts.get(a.name)
        if have is None:
            changes.append(
                Change(
                    f"add account {a.name} under {a.parent}",
                    ("add", "account", a.name, f"Parent={a.parent}", f"Organization={PORTAL_ORGANIZATION}"),
                )
            )
        elif a.name not in state.managed:  # made before the portal marked its accounts, or by hand: adopted
            changes.append(
                Change(
                    f"account {a.name}: managed by the portal (Organization={PORTAL_ORGANIZATION})",
                    ("modify", "account", "where", f"name={a.name}", "set", f"Organization={PORTAL_ORGANIZATION}"),
                )
            )
        if have is None or not same_account(a, have):
            changes.append(
                Change(
                    f"account {a.name}: {', '.join(account_settings(a, have))}",
                    ("modify", "account", "where", f"name={a.name}", "set", *account_settings(a, have)),
                )
            )
        present = set(have.users) if have else set()
        changes += [
            Change(f"add user {u} to account {a.name}", ("add", "user", u, f"account={a.name}"))
            for u in a.users
            if u not in present
        ]
        changes += [
            Change(
                f"remove user {u} from account {a.name} (no longer a member)",
                ("remove", "user", "where", f"name={u}", f"account={a.name}"),
            )
            for u in sorted(present - set(a.users))
        ]
    return changes


def diff_removed(plan: SlurmPlan, state: SlurmState) -> list[Change]:
    """The portal's accounts whose team or department is gone, children before their parents (by then
    the accounts that stay have been moved out from under them)."""
    planned = {a.name for a in plan.accounts}
    gone = sorted(name for name in state.managed - planned if name in state.accounts)

    def depth(name: str) -> int:
        level, seen = 0, set()
        while name in state.accounts and name not in seen:
            seen.add(name)
            name, level = state.accounts[name].parent, level + 1
        return level

    return [
        Change(
            f"remove account {name} (its team or department is no longer in the portal)", ("delete", "account", f"name={name}")
        )
        for name in sorted(gone, key=lambda n: (-depth(n), n))
    ]


def diff(plan: SlurmPlan, state: SlurmState) -> list[Change]:
    """The steps, in an order Slurm accepts: QOS before the accounts that allow them; removals last."""
    return diff_qos(plan, state) + diff_accounts(plan, state) + diff_removed(plan, state)
