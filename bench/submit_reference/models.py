"""Teams, memberships and jobs: the columns a submit writes, nothing more."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models


class Team(models.Model):
    objects: ClassVar[models.Manager[Team]] = models.Manager()
    slug = models.SlugField(unique=True)

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    objects: ClassVar[models.Manager[Membership]] = models.Manager()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="ref_one_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class Job(models.Model):
    objects: ClassVar[models.Manager[Job]] = models.Manager()
    team = models.ForeignKey(Team, on_delete=models.PROTECT)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    name = models.CharField(max_length=120)
    command = models.JSONField()
    gpu_model = models.CharField(max_length=20)
    gpus_per_node = models.PositiveIntegerField()
    walltime = models.PositiveIntegerField()
    state = models.CharField(max_length=12, default="pending")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
