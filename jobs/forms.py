"""The web submission form: it only gathers fields; jobs.spec.validate judges them."""

from __future__ import annotations

from typing import Any

from django import forms

from jobs.models import JobTemplate
from jobs.spec import format_walltime


class JobForm(forms.Form):
    team = forms.ChoiceField()
    name = forms.CharField(max_length=63)
    gpu_model = forms.ChoiceField(label="GPU model")
    gpus_per_node = forms.IntegerField(label="GPUs per node", min_value=1)
    nodes = forms.IntegerField(min_value=1)
    priority = forms.ChoiceField()
    walltime = forms.CharField(help_text="HH:MM:SS or D-HH:MM:SS")
    image = forms.CharField(max_length=300, required=False)
    command = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, help_text="One argument per line; nothing runs through a shell."
    )
    script = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), required=False)
    checkpoint_dir = forms.CharField(required=False)
    env = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, help_text="NAME=value, one per line")
    array = forms.CharField(required=False, help_text="Optional: element count, or a range like 0-99")

    def __init__(
        self,
        *args: Any,
        template: JobTemplate,
        teams: list[tuple[str, str]],
        gpu_models: list[str],
        priorities: list[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.template = template
        allowed = template.allowed_gpu_models or gpu_models
        self._choices("team", teams)
        self._choices("gpu_model", [(m, m.upper()) for m in gpu_models if m in allowed])
        self._choices("priority", [(p, p) for p in priorities])
        self.param_names = sorted(template.params)
        for name in self.param_names:
            self.fields[f"param_{name}"] = forms.CharField(label=name.replace("_", " "), required=False, max_length=200)
        if template.kind != "custom":
            self.fields["script"].widget = forms.HiddenInput()

    def _choices(self, name: str, choices: list[tuple[str, str]]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices

    @classmethod
    def initial_for(cls, template: JobTemplate, team: str | None) -> dict[str, Any]:
        initial: dict[str, Any] = {
            "team": team,
            "name": template.slug,
            "gpu_model": template.gpu_model,
            "gpus_per_node": template.gpus_per_node,
            "nodes": template.nodes,
            "priority": "standard",
            "walltime": format_walltime(template.walltime_s),
            "image": template.image,
            "command": "\n".join(template.command),
            "checkpoint_dir": template.checkpoint_dir,
        }
        initial.update({f"param_{k}": v for k, v in template.params.items()})
        return initial

    def as_request(self) -> dict[str, Any]:
        """The submission as the API would receive it."""
        data = self.cleaned_data
        raw: dict[str, Any] = {
            "template": self.template.slug,
            "team": data["team"],
            "name": data["name"],
            "gpu_model": data["gpu_model"],
            "gpus_per_node": data["gpus_per_node"],
            "nodes": data["nodes"],
            "priority": data["priority"],
            "walltime": data["walltime"],
            "image": data["image"],
            "checkpoint_dir": data["checkpoint_dir"],
            "params": {n: data[f"param_{n}"] for n in self.param_names if data.get(f"param_{n}")},
        }
        command = [line.strip() for line in data["command"].splitlines() if line.strip()]
        if command != list(self.template.command):
            raw["command"] = command
        if data.get("script"):
            raw["script"] = data["script"]
        env = {}
        for line in data["env"].splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip()
            elif line.strip():
                env[line.strip()] = ""
        if env:
            raw["env"] = env
        if data.get("array"):
            raw["array"] = data["array"]
        return raw
