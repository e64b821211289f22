from django.db import migrations

CLASSES = [
    ("critical", 300, False, True, "Never preempted; must fit within the team's guarantee."),
    ("standard", 200, False, False, "The default."),
    ("preemptible", 100, True, False, "May run on borrowed GPUs; first to be preempted."),
]


def create(apps, schema_editor):
    PriorityClass = apps.get_model("quotas", "PriorityClass")
    for name, rank, preemptible, within, description in CLASSES:
        PriorityClass.objects.get_or_create(
            name=name,
            defaults=dict(rank=rank, preemptible=preemptible, within_guarantee_only=within, description=description),
        )


class Migration(migrations.Migration):
    dependencies = [("quotas", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
