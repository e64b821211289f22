"""Node states and pool kinds, as code constants."""

from django.db import models

from portal.states import Transitions


class NodeState(models.TextChoices):
    READY = "ready", "Ready"
    CORDONED = "cordoned", "Cordoned"
    DRAINING = "draining", "Draining"
    DOWN = "down", "Down"


SCHEDULABLE_NODE_STATES = frozenset({NodeState.READY})
# An operator (or the guard, or the backend) may move a node between any two states, also to the
# same one with a new reason; the table still makes each change a compare-and-set that records
# the state the node really left.
NODE_TRANSITIONS = Transitions({source: set(NodeState) for source in NodeState})


class PoolKind(models.TextChoices):
    ONPREM = "onprem", "On-premises"
    CLOUD = "cloud", "Cloud burst"
