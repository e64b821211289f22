from django.db import migrations

TEMPLATES = [
    dict(
        slug="pytorch-ddp",
        name="PyTorch DDP training",
        kind="training",
        description="Distributed data-parallel training with torchrun: N GPUs per node on M nodes.",
        image="nvcr.io/nvidia/pytorch:24.05-py3",
        command=["torchrun", "--nnodes={nodes}", "--nproc-per-node={gpus_per_node}", "{script}", "--epochs={epochs}"],
        params={"script": "train.py", "epochs": "10"},
        gpu_model="a100", gpus_per_node=8, nodes=1, walltime_s=4 * 3600,
        max_gpus_per_node=8, max_nodes=4, max_walltime_s=3 * 24 * 3600,
        allowed_gpu_models=["a100", "h100"], checkpoint_dir="/checkpoints",
    ),
    dict(
        slug="blender-render",
        name="Blender frame range",
        kind="rendering",
        description="Render a frame range of a .blend scene with Cycles on one GPU; use an array to split frames.",
        image="linuxserver/blender:4.1.1",
        command=["blender", "-b", "{scene}", "-E", "CYCLES", "-s", "{frame_start}", "-e", "{frame_end}", "-a"],
        params={"scene": "scene.blend", "frame_start": "1", "frame_end": "250"},
        gpu_model="a100", gpus_per_node=1, nodes=1, walltime_s=2 * 3600,
        max_gpus_per_node=2, max_nodes=1, max_walltime_s=24 * 3600, allowed_gpu_models=[], checkpoint_dir="",
    ),
    dict(
        slug="gromacs-md",
        name="GROMACS molecular dynamics",
        kind="simulation",
        description="A GROMACS mdrun on GPUs (non-bonded, PME and update offloaded).",
        image="nvcr.io/hpc/gromacs:2023.2",
        command=["gmx", "mdrun", "-deffnm", "{deffnm}", "-nb", "gpu", "-pme", "gpu", "-update", "gpu", "-cpi", "state.cpt"],
        params={"deffnm": "md"},
        gpu_model="a100", gpus_per_node=2, nodes=1, walltime_s=12 * 3600,
        max_gpus_per_node=8, max_nodes=1, max_walltime_s=2 * 24 * 3600, allowed_gpu_models=[], checkpoint_dir="/scratch/gromacs",
    ),
    dict(
        slug="custom",
        name="Custom script",
        kind="custom",
        description="Your own batch script, run with the GPUs you ask for.",
        image="nvcr.io/nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        command=[],
        params={},
        gpu_model="a100", gpus_per_node=1, nodes=1, walltime_s=3600,
        max_gpus_per_node=8, max_nodes=2, max_walltime_s=24 * 3600, allowed_gpu_models=[], checkpoint_dir="",
    ),
]


def create(apps, schema_editor):
    JobTemplate = apps.get_model("jobs", "JobTemplate")
    for data in TEMPLATES:
        JobTemplate.objects.update_or_create(slug=data["slug"], defaults=data)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0002_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
