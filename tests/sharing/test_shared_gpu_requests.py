"""Part of a GPU: `gpu_fraction` resolves to the smallest shared model (MIG slice, time-sliced GPU) the
grid has, every refusal names the field and the limit, and Slurm and the replay map shared models."""

from __future__ import annotations

import io

import pytest

from cluster.backends.slurm.mapping import gpus_of
from cluster.gpus import GPU_MODELS, shared_model_for, slurm_gres, slurm_tres
from jobs.policy.replay import parse_pools, read_trace
from jobs.spec import ModelShape, SpecContext, SpecError, TemplateInfo, validate
from quotas.slurm import TeamInput, compile_accounts

CTX = SpecContext(
    teams={"vision": 1},
    priorities=frozenset({"standard"}),
    grid={
        "a100": ModelShape(8, 32),
        "a100-1g.10gb": ModelShape(56, 112),
        "a100-3g.40gb": ModelShape(16, 32),
        "l4-shared": ModelShape(16, 64),
    },
    known_gpu_models=frozenset(GPU_MODELS),
    max_walltime_s=86400,
    max_script_bytes=1024,
    max_array_size=10,
)
GOOD = {"team": "vision", "name": "small", "command": ["python", "eval.py"], "gpu_model": "a100"}


def refused(**changes: object) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as caught:
        validate({**GOOD, **changes}, CTX)
    return caught.value.errors


@pytest.mark.parametrize(
    ("fraction", "model"),
    [(0.1, "a100-1g.10gb"), ("1/7", "a100-1g.10gb"), (0.25, "a100-3g.40gb"), ("3/7", "a100-3g.40gb"), (1, "a100")],
)
def test_a_fraction_gets_the_smallest_shared_gpu_the_grid_has_that_is_big_enough(fraction: object, model: str) -> None:
    spec = validate({**GOOD, "gpu_fraction": fraction}, CTX)
    assert (spec.gpu_model, spec.gpus_per_node, spec.nodes) == (model, 1, 1)


def test_a_time_sliced_gpu_serves_a_quarter() -> None:
    assert validate({**GOOD, "gpu_model": "l4", "gpu_fraction": "0.25"}, CTX).gpu_model == "l4-shared"


def test_a_shared_model_can_be_named_and_asked_for_several_slices() -> None:
    spec = validate({**GOOD, "gpu_model": "a100-1g.10gb", "gpus_per_node": 3}, CTX)
    assert (spec.gpu_model, spec.gpus) == ("a100-1g.10gb", 3)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"gpu_fraction": 0}, "0 is outside (0, 1]"),
        ({"gpu_fraction": 1.5}, "1.5 is outside (0, 1]"),
        ({"gpu_fraction": "half"}, "'half' is not a number"),
        ({"gpu_fraction": True}, "is not a number"),
        ({"gpu_fraction": [0.5]}, "is not a number"),
        ({"gpu_fraction": "1/0"}, "is not a number"),
        ({"gpu_fraction": 0.6}, "no shared a100 GPU of at least 3/5; it has a100-1g.10gb (1/7), a100-3g.40gb (3/7)"),
        ({"gpu_fraction": 0.5, "gpu_model": "h100"}, "the grid has no shared h100 GPU of at least 1/2; none of its h100"),
        ({"gpu_fraction": 0.5, "gpus_per_node": 2}, "leave out gpus_per_node (it is 2)"),
        ({"gpu_fraction": 0.5, "nodes": 2}, "leave out nodes (it is 2)"),
        ({"gpu_fraction": 0.1, "gpu_model": "a100-1g.10gb"}, "already a share of one a100 GPU; give gpu_model a100"),
    ],
)
def test_bad_fractions_are_refused_naming_the_field_and_the_limit(changes: dict[str, object], words: str) -> None:
    errors = refused(**changes)
    assert words in " ".join(errors["gpu_fraction"]), errors


def test_a_template_that_allows_a_gpu_allows_its_shares() -> None:
    template = TemplateInfo(
        slug="eval", kind="training", image="", command=("python", "eval.py"), params={}, gpu_model="a100",
        gpus_per_node=1, nodes=1, walltime_s=600, max_gpus_per_node=8, max_nodes=1, max_walltime_s=3600,
        allowed_gpu_models=("a100",),
    )  # fmt: skip
    spec = validate({"team": "vision", "name": "t", "gpu_fraction": 0.1}, SpecContext(**{**CTX.__dict__, "template": template}))
    assert spec.gpu_model == "a100-1g.10gb"
    with pytest.raises(SpecError) as caught:
        validate(
            {"team": "vision", "name": "t", "gpu_model": "l4", "gpu_fraction": 0.25},
            SpecContext(**{**CTX.__dict__, "template": template}),
        )
    assert "allows only a100" in caught.value.errors["gpu_model"][0]


def test_only_the_shares_the_grid_has_are_chosen() -> None:
    bigger = shared_model_for("a100", GPU_MODELS["a100-1g.10gb"].fraction, {"a100-2g.20gb"})
    assert bigger is not None and bigger.key == "a100-2g.20gb"
    assert shared_model_for("a100", GPU_MODELS["a100-3g.40gb"].fraction, {"a100-2g.20gb"}) is None


def test_slurm_asks_mig_slices_as_typed_gpus_and_time_sliced_ones_as_shards() -> None:
    assert slurm_gres("a100") == "gpu:a100" and slurm_gres("a100-1g.10gb") == "gpu:a100-1g.10gb"
    assert slurm_gres("l4-shared") == "shard" and slurm_tres("l4-shared") == "gres/shard"
    assert gpus_of("gpu:l4:4(S:0),shard:16(S:0)") == ("l4-shared", 16)
    assert gpus_of("gpu:a100-1g.10gb:28(S:0-1)") == ("a100-1g.10gb", 28)
    assert gpus_of("gpu:a100:8(S:0)") == ("a100", 8)
    # Both time-sliced models count as Slurm's one shard TRES: their limits add up there.
    [account] = compile_accounts(
        [TeamInput("vision", (), (("l4-shared", 8, 1), ("a10g-shared", 4, 1), ("a100-1g.10gb", 14, 1)))], []
    )
    assert dict(account.grp_tres) == {"gres/shard": 12, "gres/gpu:a100-1g.10gb": 14}


TRACE = "job_id,submit_time_s,duration_s,num_gpus,gpu_type,gpu_fraction\n1,0,100,1,a100,0.1\n2,0,100,1,a100,0.5\n3,0,100,1,a100,\n4,0,100,1,l4,0.25\n"


def test_the_replay_runs_a_fraction_on_a_slice_of_a_shared_pool_when_the_grid_has_one() -> None:
    pools = parse_pools("a100:4x8,a100-1g.10gb:2x56,l4:2x4")
    loaded = read_trace(io.StringIO(TRACE), pools=pools)
    assert [(j.id, j.gpu_type, j.gpus) for j in loaded.jobs] == [
        ("1", "a100-1g.10gb", 1),  # 1/10 of an A100: one 1g.10gb slice
        ("2", "a100", 1),  # half an A100: no slice that large, so a whole GPU
        ("3", "a100", 1),
        ("4", "l4", 1),  # no time-sliced L4 pool: a whole L4
    ]
    assert loaded.fractional_jobs_rounded == 2
