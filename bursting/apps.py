from django.apps import AppConfig


class BurstingConfig(AppConfig):
    name = "bursting"
    verbose_name = "Cloud bursting and operator console"
