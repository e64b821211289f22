"""The web submission form, built from jobs.spec.SUBMIT_FIELDS: it only gathers fields; jobs.spec.validate judges them."""

from __future__ import annotations

from typing import Any

from django import forms

from jobs.models import JobTemplate
from jobs.spec import FORM_FIELDS, SUBMIT_FIELDS, SubmitField, format_walltime

LINES_HELP = {
    "string-list": "One argument per line; nothing runs through a shell.",
    "string-map": "NAME=value, one per line.",
}
TEXTAREA_ROWS = {"command": 3, "script": 6, "env": 2}


def form_field(name: str, declared: SubmitField) -> forms.Field:
    """The form field for one declared submission field; its bounds and help are the declaration's."""
    common: dict[str, Any] = {
        "required": declared.required,
        "label": declared.label or name.replace("_", " ").capitalize(),
        "help_text": LINES_HELP.get(declared.kind, declared.help),
    }
    if declared.choices:
        return forms.ChoiceField(choices=[(c, c) for c in declared.choices], **common)
    if declared.kind == "integer":
        return forms.IntegerField(min_value=declared.minimum, max_value=declared.maximum, **common)
    if name in TEXTAREA_ROWS or declared.kind in LINES_HELP:
        return forms.CharField(widget=forms.Textarea(attrs={"rows": TEXTAREA_ROWS.get(name, 2)}), **common)
    return forms.CharField(**common)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _pairs(text: str) -> dict[str, str]:
    pairs = {}
    for line in _lines(text):
        key, _, value = line.partition("=")
        pairs[key.strip()] = value.strip()
    return pairs


class JobForm(forms.Form):
    """Team, GPU model and priority are choices from the user's teams and the grid; each template placeholder is a field."""

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
        for name in FORM_FIELDS:
            self.fields[name] = form_field(name, SUBMIT_FIELDS[name])
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
        old = self.fields[name]
        self.fields[name] = forms.ChoiceField(choices=choices, required=old.required, label=old.label, help_text=old.help_text)

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
        """The submission as the API would receive it: empty fields left out, lines turned into lists and maps."""
        data = self.cleaned_data
        raw: dict[str, Any] = {"template": self.template.slug}
        for name in FORM_FIELDS:
            value = data.get(name)
            kind = SUBMIT_FIELDS[name].kind
            if kind == "string-list":
                value = _lines(value or "")
                if name == "command" and value == list(self.template.command):
                    continue  # the template's own command
            elif kind == "string-map":
                value = _pairs(value or "")
            if value not in (None, "", [], {}):
                raw[name] = value
        params = {n: data[f"param_{n}"] for n in self.param_names if data.get(f"param_{n}")}
        raw["params"] = params
        return raw
