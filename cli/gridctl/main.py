"""gridctl's commands: one small function each over the REST client; `main(argv)` returns the exit code."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gridctl import __version__, completion, config, errors, logs, output, spec
from gridctl.client import Client, RetryPolicy
from gridctl.errors import CliError, UsageError

HOLDS_GPUS = ("admitted", "dispatched", "running", "preempting")

DESCRIPTION = """\
Submit, watch and cancel jobs on a GPU Grid Portal from a terminal or CI, over its REST API.

Sign in once with `gridctl login URL` (the token comes from the portal's Tokens page), or set
GRID_URL and GRID_TOKEN. Read commands take --output table|json|yaml (-o); json and yaml print
the API's fields unchanged. 429 and 503 answers are retried after the server's Retry-After
(--retries, --max-retry-wait)."""


def epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in errors.EXIT_CODES)
    return f"""exit codes:
{codes}

environment:
  GRID_URL, GRID_TOKEN   the portal and token (over the config file; flags win over both)
  GRIDCTL_CONFIG         the config file (default $XDG_CONFIG_HOME/gridctl/config.yaml, 0600)

examples:
  gridctl login https://grid.example.org
  gridctl submit job.yaml
  gridctl submit --template blender-render --set name=shot --set scene=s.blend --array 0-99
  gridctl list --mine --state pending
  gridctl logs -f 42
  gridctl wait 42 && echo done
  eval "$(gridctl completion bash)"

More: docs/cli.md in the portal's repository."""


# --- the parser ----------------------------------------------------------------------------


def connection_options(suppress: bool) -> argparse.ArgumentParser:
    """--url/--token/... accepted before or after the command (defaults suppressed on the sub-commands)."""
    parser = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default, help="portal URL (over GRID_URL and the config file)")
    group.add_argument("--token", default=default, help="API token (over GRID_TOKEN and the config file)")
    group.add_argument(
        "--config", default=default, help="config file (default: $GRIDCTL_CONFIG or $XDG_CONFIG_HOME/gridctl/config.yaml)"
    )
    group.add_argument("--retries", type=int, default=argparse.SUPPRESS if suppress else 4, help="retries on 429/503 (default 4)")
    group.add_argument(
        "--max-retry-wait",
        type=float,
        default=argparse.SUPPRESS if suppress else 60.0,
        help="longest Retry-After to wait, in seconds; a longer one ends with exit 5 (default 60)",
    )
    group.add_argument(
        "--http-timeout", type=float, default=argparse.SUPPRESS if suppress else 30.0, help="seconds per request (default 30)"
    )
    return parser


def output_option() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-o", "--output", choices=output.FORMATS, default="table", help="table (default), json or yaml")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridctl",
        description=DESCRIPTION,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"gridctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common, out = connection_options(suppress=True), output_option()

    def command(name: str, help: str, *, reads: bool = False) -> argparse.ArgumentParser:
        parents = [common, out] if reads else [common]
        return sub.add_parser(name, help=help, description=help, parents=parents, epilog=epilog(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip

    login = command("login", "store the portal URL and a token in the config file (0600), after checking them")
    login.add_argument("login_url", metavar="URL", help="the portal, e.g. https://grid.example.org")
    login.add_argument("--token-stdin", action="store_true", help="read the token from standard input")
    login.set_defaults(run=cmd_login)

    submit = command("submit", "submit a job or a job array from a YAML/JSON spec and/or a template", reads=True)
    submit.add_argument(
        "spec", nargs="?", metavar="SPEC", help="job spec file (YAML or JSON; - for stdin): the fields of POST /api/v1/jobs/"
    )
    submit.add_argument("--template", help="template slug (see `gridctl templates`)")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a field (gpus_per_node=2, env.SEED=1) or a template placeholder (scene=s.blend); repeatable")  # fmt: skip
    submit.add_argument("--name", help="job name")
    submit.add_argument("--team", help="team slug (needed when you are in several teams)")
    submit.add_argument("--array", help="a job array: a count (10) or a range (0-99, 0-99:2)")
    submit.add_argument("--dry-run", action="store_true", help="print the request body instead of submitting it")
    submit.set_defaults(run=cmd_submit)

    status = command("status", "one job: state, why it is pending, its place in line and start estimate", reads=True)
    status.add_argument("job", type=int, metavar="JOB", help="job id")
    status.add_argument("--events", action="store_true", help="also the job's transitions (who, when, why)")
    status.set_defaults(run=cmd_status)

    listing = command("list", "jobs you may see, newest first, with why pending, position and start estimate", reads=True)
    listing.add_argument("--state", help="only jobs in this state (pending, running, failed, ...)")
    listing.add_argument("--team", help="only this team's jobs (slug)")
    listing.add_argument("--mine", action="store_true", help="only my jobs")
    listing.add_argument("--name", dest="q", help="only jobs whose name contains this text")
    listing.add_argument("--array-id", help="only the elements of this job array")
    listing.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50; 0: all)")
    listing.set_defaults(run=cmd_list)

    log = command("logs", "print a job's log; -f follows it until the job ends")
    log.add_argument("job", type=int, metavar="JOB", help="job id")
    log.add_argument(
        "-f", "--follow", action="store_true", help="follow over the websocket (polling the API if it cannot be used)"
    )
    log.add_argument(
        "--interval", type=float, default=2.0, help="seconds between polls when following without the websocket (default 2)"
    )
    log.set_defaults(run=cmd_logs)

    cancel = command("cancel", "cancel jobs (pending, held, admitted or running)", reads=True)
    cancel.add_argument("jobs", type=int, nargs="+", metavar="JOB", help="job id(s)")
    cancel.add_argument("--reason", default="", help="why (kept in the job's timeline; at most 300 characters)")
    cancel.set_defaults(run=cmd_cancel)

    wait = command("wait", "wait until a job ends; exit with its exit code (see exit codes)", reads=True)
    wait.add_argument("job", type=int, metavar="JOB", help="job id")
    wait.add_argument("--timeout", type=float, default=0, help="give up after this many seconds with exit 6 (default: never)")
    wait.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    wait.set_defaults(run=cmd_wait)

    quota = command(
        "quota", "your teams' GPU quotas per model (guarantee, limit, weight) and the GPUs their jobs hold", reads=True
    )
    quota.add_argument("--team", help="only this team (slug)")
    quota.set_defaults(run=cmd_quota)

    cost = command("cost", "a month's cost: total, per team, per GPU model and pool kind (team leads and finance)", reads=True)
    cost.add_argument("--month", help="YYYY-MM (default: this month)")
    cost.set_defaults(run=cmd_cost)

    sweeps = command(
        "sweeps",
        "hyperparameter sweeps: list them, show one with its trials (SWEEP), start one (--create SPEC) or cancel one",
        reads=True,
    )
    sweeps.add_argument("sweep", type=int, nargs="?", metavar="SWEEP", help="a sweep id: show it and its trials")
    sweeps.add_argument("--create", metavar="SPEC", help="start a sweep from a YAML/JSON file ('-' for stdin; docs/sweeps.md)")
    sweeps.add_argument("--cancel", action="store_true", help="cancel SWEEP and its unfinished trials")
    sweeps.set_defaults(run=cmd_sweeps)

    templates = command("templates", "the job templates and their placeholders", reads=True)
    templates.set_defaults(run=cmd_templates)

    shell = command("completion", "print a shell completion script")
    shell.add_argument("shell", choices=["bash", "zsh"])
    shell.set_defaults(run=cmd_completion)
    return parser


# --- running a command ---------------------------------------------------------------------


class Context:
    """What a command gets: its arguments, the client (made on first use) and the output streams."""

    def __init__(self, args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO, err: TextIO) -> None:
        self.args, self.parser, self.out, self.err = args, parser, out, err
        self._client: Client | None = None

    @property
    def config_path(self) -> Path:
        explicit = getattr(self.args, "config", None)
        return Path(explicit) if explicit else config.config_path()

    def client(self, url: str | None = None, token: str | None = None) -> Client:
        if self._client is None:
            found = config.resolve(url or self.args.url, token or self.args.token, self.config_path)
            policy = RetryPolicy(retries=max(0, self.args.retries), max_wait_s=self.args.max_retry_wait)
            self._client = Client(found.url, found.token, timeout_s=self.args.http_timeout, policy=policy, notices=self.err)
        return self._client

    def show(self, data: Any, render: Callable[[], object]) -> None:
        fmt = getattr(self.args, "output", "table")
        if fmt == "table":
            render()
        else:
            output.dump(data, fmt, self.out)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # argparse prints to sys.stdout/stderr
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return int(exc.code or 0)
    if not getattr(args, "run", None):
        parser.print_help(out)
        return errors.USAGE
    ctx = Context(args, parser, out, err)
    try:
        return int(args.run(ctx) or errors.OK)
    except CliError as exc:
        err.write(f"gridctl: {exc.message}\n")
        return exc.code
    except KeyboardInterrupt:
        err.write("gridctl: interrupted\n")
        return errors.INTERRUPTED
    finally:
        ctx.close()


def entry() -> None:
    sys.exit(main())


# --- commands ------------------------------------------------------------------------------


def cmd_login(ctx: Context) -> int:
    url = config.normalise_url(ctx.args.login_url)
    token = ctx.args.token
    if ctx.args.token_stdin:
        token = sys.stdin.readline().strip()
    token = token or os.environ.get("GRID_TOKEN")
    if not token:
        if not sys.stdin.isatty():
            raise UsageError("no token: pass --token, --token-stdin or GRID_TOKEN (create one on the portal's Tokens page)")
        token = getpass.getpass(f"API token for {url} (from {url}/tokens/): ").strip()
    if not token:
        raise UsageError("no token given")
    me = ctx.client(url, token).get("/api/v1/me/")
    config.write_file(ctx.config_path, url, token)
    teams = ", ".join(f"{t['slug']} ({t['role']})" for t in me.get("teams", [])) or "none"
    ctx.out.write(f"Signed in to {url} as {me.get('username')}; teams: {teams}. Saved to {ctx.config_path}\n")
    return errors.OK


def submission_body(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    body = spec.load(args.spec)
    if args.template:
        body["template"] = args.template
    for field in ("name", "team", "array"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    placeholders: set[str] = set()
    if body.get("template") and args.set:
        template = ctx.client().get(f"/api/v1/templates/{body['template']}/")
        placeholders = set(template.get("params") or {})
    body = spec.apply_sets(body, args.set, placeholders)
    if not body:
        raise UsageError("nothing to submit: give a SPEC file, --template or --set fields (see gridctl submit --help)")
    return body


def cmd_submit(ctx: Context) -> int:
    body = submission_body(ctx)
    if ctx.args.dry_run:
        output.dump(body, "yaml" if ctx.args.output == "table" else ctx.args.output, ctx.out)
        return errors.OK
    created = ctx.client().post("/api/v1/jobs/", body)
    if "array_id" in created and "ids" in created:
        ctx.show(
            created,
            lambda: ctx.out.write(
                f"Submitted array {created['array_id']}: {created['count']} jobs, ids {_ids(created['ids'])}\n"
            ),
        )
    else:
        ctx.show(created, lambda: ctx.out.write(f"Submitted job {created['id']} ({created['name']}): {created['state']}\n"))
    return errors.OK


def _ids(ids: list[int]) -> str:
    return f"{ids[0]}-{ids[-1]}" if ids and ids == list(range(ids[0], ids[0] + len(ids))) else " ".join(map(str, ids))


def cmd_status(ctx: Context) -> int:
    job = ctx.client().get(f"/api/v1/jobs/{ctx.args.job}/")
    events = ctx.client().get(f"/api/v1/jobs/{ctx.args.job}/events/") if ctx.args.events else None
    data = {**job, "events": events} if events is not None else job

    def render() -> None:
        output.pairs(output.job_details(job), ctx.out)
        if events:
            ctx.out.write("\n")
            output.table(events, [(k.upper(), _getter(k)) for k in ("at", "from_state", "to_state", "actor", "reason")], ctx.out)

    ctx.show(data, render)
    return errors.OK


def _getter(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(key)


def cmd_list(ctx: Context) -> int:
    a = ctx.args
    params = {"state": a.state, "team": a.team, "mine": "true" if a.mine else None, "q": a.q, "array_id": a.array_id}
    jobs = list(ctx.client().pages("/api/v1/jobs/", {k: v for k, v in params.items() if v}, a.limit or None))
    ctx.show(jobs, lambda: output.table(jobs, output.JOB_COLUMNS, ctx.out))
    return errors.OK


def cmd_logs(ctx: Context) -> int:
    client = ctx.client()
    if ctx.args.follow:
        logs.follow(client, ctx.args.job, ctx.out, ctx.args.interval, ctx.err)
    else:
        client.get(f"/api/v1/jobs/{ctx.args.job}/")  # a clear 404 for a job that is not there
        logs.Printer(client, ctx.args.job, ctx.out).fetch()
    return errors.OK


def cmd_cancel(ctx: Context) -> int:
    cancelled = [ctx.client().post(f"/api/v1/jobs/{job}/cancel/", {"reason": ctx.args.reason}) for job in ctx.args.jobs]
    ctx.show(cancelled, lambda: [ctx.out.write(f"Job {j['id']} ({j['name']}): {j['state']}\n") for j in cancelled])
    return errors.OK


def wait_exit_code(job: dict[str, Any]) -> int:
    """0 for success; the job's own non-zero exit code; else the documented code for how it ended."""
    state, code = job.get("state"), job.get("exit_code")
    if state == "succeeded":
        return errors.OK
    if state == "cancelled":
        return errors.JOB_CANCELLED
    if "TimeLimit" in str(job.get("reason_detail") or ""):
        return errors.JOB_TIMED_OUT
    if isinstance(code, int) and 0 < code < 256:
        return code
    return errors.JOB_FAILED


def cmd_wait(ctx: Context) -> int:
    deadline = time.monotonic() + ctx.args.timeout if ctx.args.timeout > 0 else None
    while True:
        job: dict[str, Any] = ctx.client().get(f"/api/v1/jobs/{ctx.args.job}/")
        if job.get("state") in logs.TERMINAL:
            break
        if deadline is not None and time.monotonic() >= deadline:
            ctx.err.write(f"gridctl: job {job['id']} is still {job['state']} after {ctx.args.timeout:g} s\n")
            return errors.WAIT_TIMEOUT
        logs.sleep(ctx.args.interval if deadline is None else max(0.0, min(ctx.args.interval, deadline - time.monotonic())))
    code = wait_exit_code(job)
    ctx.show(
        job,
        lambda: ctx.out.write(
            f"Job {job['id']} ({job['name']}): {job['state']}, exit code {output.text(job.get('exit_code'))}\n"
        ),
    )
    return code


def cmd_quota(ctx: Context) -> int:
    client = ctx.client()
    quotas = [q for q in client.get("/api/v1/quotas/") if not ctx.args.team or q["team"] == ctx.args.team]
    held: dict[tuple[str, str], int] = defaultdict(int)
    for state in HOLDS_GPUS:  # the quota API does not report use: count the GPUs of the jobs that hold them
        for job in client.pages("/api/v1/jobs/", {"state": state, "team": ctx.args.team}, None):
            held[(job["team"], job["gpu_model"])] += int(job.get("gpus") or 0)
    rows = [{**q, "in_use": held.get((q["team"], q["gpu_model"]), 0)} for q in quotas]
    columns = [(title, _getter(key)) for title, key in (
        ("TEAM", "team"), ("GPU MODEL", "gpu_model"), ("IN USE", "in_use"), ("GUARANTEE", "guarantee"), ("LIMIT", "limit"),
        ("WEIGHT", "weight"), ("LENDABLE", "lendable"), ("LEAD MAX", "lead_max_limit"),
    )]  # fmt: skip
    ctx.show(rows, lambda: output.table(rows, columns, ctx.out))
    return errors.OK


def cmd_cost(ctx: Context) -> int:
    month = ctx.args.month or datetime.now(UTC).strftime("%Y-%m")
    report = ctx.client().get("/api/v1/billing/summary/", month=month)

    def render() -> None:
        currency = report.get("currency", "")
        ctx.out.write(f"{report.get('month')}: {report.get('total')} {currency}\n\n")
        output.table(report.get("teams", []), [(k.upper(), _getter(k)) for k in ("team", "invoice", "state", "total")], ctx.out)
        for title, key in (("GPU MODEL", "by_gpu_model"), ("POOL KIND", "by_pool_kind")):
            rows = [{"name": k, "cost": v} for k, v in (report.get(key) or {}).items()]
            ctx.out.write("\n")
            output.table(rows, [(title, _getter("name")), (f"COST ({currency})", _getter("cost"))], ctx.out)

    ctx.show(report, render)
    return errors.OK


def cmd_sweeps(ctx: Context) -> int:
    args, client = ctx.args, ctx.client()
    if args.create and (args.sweep is not None or args.cancel):
        raise UsageError("--create starts a new sweep: give no SWEEP and no --cancel with it")
    if args.cancel and args.sweep is None:
        raise UsageError("--cancel needs the SWEEP to cancel")
    if args.create:
        sweep = client.post("/api/v1/sweeps/", spec.load(args.create))
    elif args.cancel:
        sweep = client.post(f"/api/v1/sweeps/{args.sweep}/cancel/", {})
    elif args.sweep is not None:
        sweep = client.get(f"/api/v1/sweeps/{args.sweep}/")
    else:
        rows = client.get("/api/v1/sweeps/")["results"]
        columns = [(k.upper(), _getter(k)) for k in ("id", "name", "team", "state")]
        ctx.show(rows, lambda: output.table(rows, columns, ctx.out))
        return errors.OK

    def render() -> None:
        best = sweep.get("best") or {}
        ctx.out.write(
            f"Sweep {sweep['id']} ({sweep['name']}, team {sweep['team']}): {sweep['state']}"
            f"{' - ' + sweep['detail'] if sweep.get('detail') else ''}\n"
            f"{sweep['direction']} {sweep['metric']} with {sweep['sampler']}, {len(sweep['trials'])} of "
            f"{sweep['max_trials']} trials, at most {sweep['max_parallel']} at once, early stopping: {sweep['early_stopping']}\n"
        )
        if best:
            ctx.out.write(f"best: trial {best['number']} = {best['value']} with {best['params']}\n")
        ctx.out.write("\n")
        columns = [(title, _getter(key)) for title, key in (
            ("TRIAL", "number"), ("STATE", "state"), ("VALUE", "value"), ("STEP", "last_step"), ("JOB", "job"),
            ("PARAMS", "params"),
        )]  # fmt: skip
        output.table(sweep["trials"], columns, ctx.out)

    ctx.show(sweep, render)
    return errors.OK


def cmd_templates(ctx: Context) -> int:
    rows = ctx.client().get("/api/v1/templates/")
    columns: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("SLUG", _getter("slug")),
        ("KIND", _getter("kind")),
        ("GPUS", lambda t: f"{t.get('nodes')}x{t.get('gpus_per_node')} {t.get('gpu_model')}"),
        ("PLACEHOLDERS", lambda t: " ".join(f"{k}={v}" for k, v in (t.get("params") or {}).items())),
    ]
    ctx.show(rows, lambda: output.table(rows, columns, ctx.out))
    return errors.OK


def cmd_completion(ctx: Context) -> int:
    ctx.out.write(completion.bash(ctx.parser) if ctx.args.shell == "bash" else completion.zsh(ctx.parser))
    return errors.OK
