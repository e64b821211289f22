"""Finance's rate card forms on the billing page (GPU-hours, storage); the services decide the rest."""

from __future__ import annotations

from django import forms

from cluster.gpus import GPU_MODELS
from cluster.states import PoolKind


class RateCardForm(forms.Form):
    """The fields of a rate card, with the limits the model has; overlaps and finalised months are the service's call."""

    gpu_model = forms.ChoiceField(choices=[(key, key.upper()) for key in GPU_MODELS])
    pool_kind = forms.ChoiceField(choices=PoolKind.choices)
    pool = forms.CharField(max_length=60, required=False, help_text="Empty: every pool of the kind.")
    per_gpu_hour = forms.DecimalField(max_digits=12, decimal_places=4, min_value=0)
    valid_from = forms.DateField(help_text="YYYY-MM-DD")
    valid_until = forms.DateField(required=False, help_text="Exclusive; empty: until further notice.")
    note = forms.CharField(max_length=200, required=False)


class StorageRateForm(forms.Form):
    """A storage rate card: the price of a GB kept for a month, for a period; overlaps are the service's call."""

    per_gb_month = forms.DecimalField(max_digits=12, decimal_places=4, min_value=0, label="Per GB-month")
    valid_from = forms.DateField(help_text="YYYY-MM-DD")
    valid_until = forms.DateField(required=False, help_text="Exclusive; empty: until further notice.")
    note = forms.CharField(max_length=200, required=False)
