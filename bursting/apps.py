from django.apps import AppConfig


class BurstingConfig(AppConfig):
    name = "bursting"
    verbose_name = "Cloud bursting"

    def ready(self) -> None:
        # Register this app's Celery tasks in every process, so a service can enqueue one by name.
        from bursting import tasks  # noqa: F401
        from bursting.models import BurstPolicy, InstanceType
        from bursting.services import burstable_capacity, teams_only_nodes
        from cluster import services as cluster_services

        # Jobs of a GPU model only an elastic pool offers are valid while a policy can burst for them.
        cluster_services.register_burstable(burstable_capacity, models=(BurstPolicy, InstanceType))
        # A burst a policy paid for on behalf of some teams is theirs: admission keeps other teams off its nodes.
        cluster_services.register_teams_only(teams_only_nodes)
