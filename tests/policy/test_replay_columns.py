"""The replay's optional trace columns: GPU types and pools, priority classes, users, GPU fractions, bad rows."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.policy.replay import (
    DEFAULT_TEAM,
    Pool,
    ReplaySpec,
    TraceError,
    TraceJob,
    main,
    parse_class_map,
    parse_pools,
    read_trace,
    replay,
    run_from_options,
)

POOLS = (Pool("a100", 2, 8), Pool("t4", 2, 4))
HEADER = "job_id,submit_time_s,duration_s,num_gpus,team,user,gpu_type,priority_class,gpu_fraction,comment"


def _lines(*rows: str, header: str = HEADER) -> list[str]:
    return [header, *rows]


def _options(trace: Path, **extra: object) -> dict[str, object]:
    options: dict[str, object] = {
        "trace": str(trace),
        "nodes": "a100:2x8,t4:2x4",
        "gpus_per_node": 8,
        "policy": "fair",
        "baseline": "fifo",
        "quotas": None,
        "checkpoint_interval": 1800.0,
        "half_life": 86400.0,
        "class_map": "LS=critical,BE=preemptible",
        "strict": False,
    }
    options.update(extra)
    return options


def _write(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(_lines(*rows)) + "\n")
    return path


# -- columns -------------------------------------------------------------------------------


def test_every_optional_column_is_read_and_unknown_columns_are_ignored() -> None:
    loaded = read_trace(
        _lines("j1,0,100,4,vision,ann,t4,LS,,ignored", "j2,5,50,1,,bob,a100,BE,0.25,x"),
        POOLS,
        {"LS": "critical", "BE": "preemptible"},
    )
    assert loaded.errors == []
    one, two = loaded.jobs
    assert (one.team, one.user, one.gpu_type, one.priority, one.priority_class, one.gpu_fraction) == (
        "vision", "ann", "t4", "critical", "LS", None,
    )  # fmt: skip
    assert (two.team, two.gpu_type, two.priority, two.gpus, two.gpu_fraction) == ("bob", "a100", "preemptible", 1, 0.25)
    assert loaded.fractional_jobs_rounded == 1


def test_the_original_five_columns_still_load_with_defaults() -> None:
    loaded = read_trace(["job_id,submit_time_s,duration_s,num_gpus,team", "j1,0,10,2,x"])
    (job,) = loaded.jobs
    assert (job.team, job.gpu_type, job.priority, job.priority_class, job.user, job.gpu_fraction) == (
        "x", "", "standard", "", "", None,
    )  # fmt: skip


def test_an_empty_team_falls_back_to_the_user_then_to_the_shared_default() -> None:
    loaded = read_trace(_lines("a,0,1,1,,ann,,,,", "b,0,1,1,,,,,,", "c,0,1,1,vision,ann,,,,"))
    assert [j.team for j in loaded.jobs] == ["ann", DEFAULT_TEAM, "vision"]


def test_an_empty_gpu_type_runs_on_the_first_pool() -> None:
    trace = [TraceJob("a", 0.0, 100.0, 8, "x"), TraceJob("b", 0.0, 100.0, 4, "x", gpu_type="t4")]
    report = replay(trace, ReplaySpec(4, 8, pools=POOLS))
    assert report["completed"] == 2 and report["limit_violations"] == 0
    assert report["max_wait_s"] == 0.0  # each fits its own pool at once


def test_each_gpu_model_has_its_own_capacity() -> None:
    # Two t4 nodes of 4 GPUs: three 4-GPU t4 jobs cannot run together, though the a100 pool is idle.
    trace = [TraceJob(f"t{i}", 0.0, 1000.0, 4, "x", gpu_type="t4") for i in range(3)]
    report = replay(trace, ReplaySpec(4, 8, pools=POOLS, policy="fifo"))
    assert report["completed"] == 3
    assert report["max_wait_s"] == 1000.0
    assert report["limit_violations"] == 0


def test_a_job_with_a_gpu_type_without_a_pool_cannot_be_replayed() -> None:
    with pytest.raises(TraceError, match="gpu_type: no pool for v100"):
        replay([TraceJob("a", 0.0, 1.0, 1, "x", gpu_type="v100")], ReplaySpec(4, 8, pools=POOLS))


# -- pool spec and class map --------------------------------------------------------------


def test_a_pool_spec_or_a_plain_node_count() -> None:
    assert parse_pools("a100:64x8, t4:32X4") == (Pool("a100", 64, 8), Pool("t4", 32, 4))
    assert parse_pools("96", 8) == (Pool("gpu", 96, 8),)
    assert parse_pools(12, 4) == (Pool("gpu", 12, 4),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a100:64", "not MODEL:NODESxGPUS"),
        ("a100:x8", "not MODEL:NODESxGPUS"),
        (":4x8", "not MODEL:NODESxGPUS"),
        ("a100:4x8,a100:2x8", "given twice"),
        ("a100:0x8", "0 nodes is outside"),
        ("a100:4x0", "0 GPUs per node is outside"),
        ("0", "0 is outside"),
        ("a100:-1x8", "not MODEL:NODESxGPUS"),
    ],
)
def test_a_bad_pool_spec_names_the_field_and_the_rule(spec: str, message: str) -> None:
    with pytest.raises(TraceError, match=f"^nodes: .*{message}"):
        parse_pools(spec)


def test_a_class_map_maps_names_to_the_portal_classes() -> None:
    assert parse_class_map("LS=critical, BE=preemptible") == {"LS": "critical", "BE": "preemptible"}
    assert parse_class_map("") == {}
    with pytest.raises(TraceError, match="class_map: LS=urgent: the class must be one of critical, standard, preemptible"):
        parse_class_map("LS=urgent")
    with pytest.raises(TraceError, match="class_map: 'LS' is not NAME=CLASS"):
        parse_class_map("LS")


def test_unmapped_class_names_refuse_the_trace_listing_them() -> None:
    rows = _lines("a,0,1,1,x,,,LS,,", "b,0,1,1,x,,,BE,,", "c,0,1,1,x,,,BE,,", "d,0,1,1,x,,,critical,,")
    with pytest.raises(TraceError, match=r"priority_class: 'BE' \(2 rows\), 'LS' \(1 rows\) not mapped"):
        read_trace(rows)
    loaded = read_trace(rows, class_map={"LS": "critical", "BE": "standard"})
    assert [j.priority for j in loaded.jobs] == ["critical", "standard", "standard", "critical"]


# -- bad rows ------------------------------------------------------------------------------

BAD_ROWS = (
    "ok1,0,10,1,x,,,,,",
    "b1,zero,10,1,x,,,,,",  # line 3
    "b2,0,-5,1,x,,,,,",  # line 4
    "b3,0,10,0,x,,,,,",  # line 5
    "b4,0,10,1.5,x,,,,,",  # line 6
    "b5,0,10,17,x,,a100,,,",  # line 7: the a100 pool holds 2 x 8
    "b6,0,10,1,x,,v100,,,",  # line 8
    "b7,0,10,1,x,,,,1.5,",  # line 9
    "b8,0,10,2,x,,,,0.5,",  # line 10
    "ok1,0,10,1,x,,,,,",  # line 11: the same id again
    "ok2,0,10,16,x,,a100,,,",
)


def test_bad_rows_are_skipped_and_reported_with_their_line_and_field() -> None:
    loaded = read_trace(_lines(*BAD_ROWS), POOLS)
    assert [j.id for j in loaded.jobs] == ["ok1", "ok2"]
    assert loaded.skipped_rows == 9
    assert loaded.errors == [
        "line 3: submit_time_s: 'zero' is not a number",
        "line 4: duration_s: '-5' must be a finite number >= 0",
        "line 5: num_gpus: 0 must be at least 1",
        "line 6: num_gpus: '1.5' is not a whole number",
        "line 7: num_gpus: 17 is more than pool 'a100' can ever hold (2x8)",
        "line 8: gpu_type: no pool for 'v100' (pools: a100, t4)",
        "line 9: gpu_fraction: 1.5 is outside (0, 1]",
        "line 10: gpu_fraction: a fraction needs num_gpus 1, not 2",
        "line 11: job_id: 'ok1' appears twice",
    ]


def test_strict_refuses_a_trace_with_bad_rows_listing_them() -> None:
    with pytest.raises(TraceError) as caught:
        read_trace(_lines(*BAD_ROWS), POOLS, strict=True)
    assert "9 bad row(s)" in str(caught.value)
    assert "line 3: submit_time_s" in str(caught.value) and "line 11: job_id" in str(caught.value)
    assert read_trace(_lines("a,0,1,1,x,,,,,"), POOLS, strict=True).jobs[0].id == "a"


def test_a_missing_required_column_refuses_the_trace() -> None:
    with pytest.raises(TraceError, match=r"trace: missing column\(s\) num_gpus"):
        read_trace(["job_id,submit_time_s,duration_s,team", "a,0,1,x"])


# -- the report ----------------------------------------------------------------------------


def test_the_report_counts_skipped_rows_and_rounded_fractions_and_adds_per_class(tmp_path: Path) -> None:
    rows = [f"j{i},{i * 10},{500 + i},{(1, 2, 4)[i % 3]},team{i % 2},,{('a100', 't4', '')[i % 3]},{('LS', 'BE')[i % 2]},,"
            for i in range(30)]  # fmt: skip
    rows += ["f1,0,100,1,team0,,t4,BE,0.5,", "bad,0,100,99,team0,,,,,"]
    quotas = tmp_path / "quotas.json"  # critical jobs must fit their team's guarantee, in each pool
    quotas.write_text(json.dumps({"team0": {"guarantee": 4, "limit": 16}, "team1": {"guarantee": 4, "limit": 16}}))
    report = run_from_options(_options(_write(tmp_path, *rows), quotas=str(quotas)))
    assert report["skipped_rows"] == 1 and report["row_errors"] == [
        "line 33: num_gpus: 99 is more than pool 'a100' can ever hold (2x8)"
    ]
    assert report["fractional_jobs_rounded"] == 1
    assert report["pools"] == {"a100": {"nodes": 2, "gpus_per_node": 8}, "t4": {"nodes": 2, "gpus_per_node": 4}}
    for policy in ("fair", "fifo"):
        figures = report[policy]
        assert figures["jobs"] == figures["completed"] == 31 and figures["limit_violations"] == 0
        assert set(figures["per_class"]) == {"critical", "preemptible"}
        for row in figures["per_class"].values():
            assert set(row) == {"jobs", "completed", "mean_wait_s", "max_wait_s"}
            assert row["max_wait_s"] >= row["mean_wait_s"] >= 0
        assert sum(r["jobs"] for r in figures["per_class"].values()) == 31
        assert {"fair", "fifo"} <= set(report) and {"per_team", "fairness", "max_wait_s"} <= set(figures)


def test_no_per_class_without_classes(tmp_path: Path) -> None:
    report = run_from_options(_options(_write(tmp_path, "a,0,1,1,x,,,,,"), nodes="4", class_map=""))
    assert "per_class" not in report["fair"] and report["nodes"] == 4 and report["skipped_rows"] == 0


def test_the_command_refuses_bad_rows_with_strict_and_a_bad_pool_spec(tmp_path: Path) -> None:
    trace = _write(tmp_path, *BAD_ROWS)
    with pytest.raises(CommandError, match="line 3: submit_time_s"):
        call_command("replay_trace", str(trace), "--nodes", "a100:2x8,t4:2x4", "--strict", "--json", stdout=io.StringIO())
    with pytest.raises(CommandError, match="nodes: 'a100' is not MODEL:NODESxGPUS"):
        call_command("replay_trace", str(trace), "--nodes", "a100", "--json", stdout=io.StringIO())
    out = io.StringIO()
    call_command("replay_trace", str(trace), "--nodes", "a100:2x8,t4:2x4", "--json", stdout=out)
    assert json.loads(out.getvalue())["skipped_rows"] == 9


def test_the_module_exits_non_zero_on_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = _write(tmp_path, *BAD_ROWS)
    with pytest.raises(SystemExit) as exited:
        main([str(trace), "--nodes", "a100:2x8,t4:2x4", "--strict"])
    assert exited.value.code == 2
    assert "line 4: duration_s" in capsys.readouterr().err
    main([str(trace), "--nodes", "a100:2x8,t4:2x4", "--class-map", "LS=critical"])
    table = capsys.readouterr().out
    assert "skipped 9 bad row(s); first: line 3: submit_time_s" in table and "mean_wait_s" in table


# -- the what-if planner -------------------------------------------------------------------

PLANNER_TRACE = "\n".join(
    [HEADER]
    + [
        f"p{i},{i * 60},{1800 + i},{(1, 2, 4, 8)[i % 4]},{('', 'vision')[i % 2]},u{i % 3},{('', 't4')[i % 4 == 1]},"
        f"{('LS', 'BE')[i % 2]},{'0.5' if i % 4 == 0 else ''},z"
        for i in range(40)
    ]
    + ["bad,0,10,64,x,,t4,,,"]
)


def _upload(text: str) -> object:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("trace.csv", text.encode(), content_type="text/csv")


@pytest.mark.django_db
def test_the_planner_replays_an_uploaded_trace_on_a_pool_spec(web: Any, olivia: Any, grid: Any) -> None:
    from jobs import planning
    from jobs.models import WhatIfRun

    form = {"gpu_model": "a100", "days": "1", "add_nodes": "2", "pools": "a100:2x8,t4:2x4"}
    response = web(olivia).post(
        "/planning/", {**form, "class_map": "LS=standard,BE=preemptible", "trace": _upload(PLANNER_TRACE)}
    )
    assert response.status_code == 302
    run = WhatIfRun.objects.get()
    assert run.pools == "a100:2x8,t4:2x4" and run.class_map == "LS=standard,BE=preemptible"
    planning.execute(run.pk)
    run.refresh_from_db()
    assert run.state == "done" and run.result is not None and run.jobs_replayed == 40
    assert run.result["skipped_rows"] == 1 and run.result["row_errors"][0].startswith("line 42: num_gpus: 64")
    assert run.result["fractional_jobs_rounded"] == 10
    assert run.result["pools"] == {"now": {"a100": "2x8", "t4": "2x4"}, "scenario": {"a100": "4x8", "t4": "2x4"}}
    for label in ("now", "scenario"):
        figures = run.result[label]
        assert figures["completed"] == 40 and figures["limit_violations"] == 0
        assert set(figures["per_class"]) == {"standard", "preemptible"}
        assert set(figures["per_team"]) == {"vision", "u0", "u1", "u2"}  # empty team: the user
    assert run.result["scenario"]["mean_wait_s"] <= run.result["now"]["mean_wait_s"]
    page = web(olivia).get(f"/planning/{run.pk}/").content.decode()
    assert "1 bad row(s) skipped; first: line 42: num_gpus: 64" in page and "10 job(s) asking for part of a GPU" in page


@pytest.mark.django_db
def test_without_a_pool_spec_an_uploaded_trace_runs_on_the_grids_nodes_of_the_model(web: Any, olivia: Any, grid: Any) -> None:
    from jobs import planning
    from jobs.models import WhatIfRun

    trace = "\n".join([HEADER, "a,0,600,8,x,,a100,,,", "b,0,600,8,x,,,,,", "c,10,600,4,y,,,,,", "d,0,1,1,x,,t4,,,"])
    response = web(olivia).post("/planning/", {"gpu_model": "a100", "days": "1", "add_nodes": "1", "trace": _upload(trace)})
    assert response.status_code == 302
    run = WhatIfRun.objects.get()
    planning.execute(run.pk)
    run.refresh_from_db()
    assert run.result is not None and run.result["pools"]["now"] == {"a100": "2x8"}
    assert run.result["row_errors"] == ["line 5: gpu_type: no pool for 't4' (pools: a100)"]
    assert run.result["now"]["completed"] == 3 and run.result["now"]["max_wait_s"] == 590.0
    assert run.result["scenario"]["max_wait_s"] == 0.0  # a third node


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"pools": "a100:2"}, "pools", "not MODEL:NODESxGPUS"),
        ({"pools": "a100:0x8"}, "pools", "0 nodes is outside"),
        ({"class_map": "LS=urgent"}, "class_map", "the class must be one of"),
        ({"trace": "job_id,team\na,x\n"}, "trace", "missing column"),
        # On the grid's a100 nodes alone, the ten t4 rows are bad rows, and not counted as unmapped.
        ({"trace": PLANNER_TRACE}, "trace", "priority_class: 'BE' (10 rows), 'LS' (20 rows) not mapped"),
        ({"trace": PLANNER_TRACE, "class_map": "LS=critical", "pools": "a100:2x8,t4:2x4"}, "trace", "'BE' (20 rows)"),
        (
            {"trace": "job_id,submit_time_s,duration_s,num_gpus\nx,0,1,0\n"},
            "trace",
            "has no job to replay (first bad row: line 2",
        ),
    ],
)
def test_the_planner_form_names_the_bad_field(
    web: Any, olivia: Any, grid: Any, extra: dict[str, str], field: str, message: str
) -> None:
    from jobs.models import WhatIfRun

    data: dict[str, object] = {"gpu_model": "a100", "days": "1", "add_nodes": "0", **extra}
    if "trace" in extra:
        data["trace"] = _upload(extra["trace"])
    response = web(olivia).post("/planning/", data)
    assert response.status_code == 200 and not WhatIfRun.objects.exists()
    errors = response.context["errors"]
    assert list(errors) == [field]
    assert message in " ".join(errors[field])
