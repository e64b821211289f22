"""Node states and pool kinds, as code constants."""

from django.db import models


class NodeState(models.TextChoices):
    READY = "ready", "Ready"
    CORDONED = "cordoned", "Cordoned"
    DRAINING = "draining", "Draining"
    DOWN = "down", "Down"


SCHEDULABLE_NODE_STATES = frozenset({NodeState.READY})


class PoolKind(models.TextChoices):
    ONPREM = "onprem", "On-premises"
    CLOUD = "cloud", "Cloud burst"
