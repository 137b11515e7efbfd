"""The dtype the product computes in: the PREFLOOP_DTYPE setting, resolved on this machine by `prefcore.hardware`.

The services that load models (sampling, training, evaluation, judges) ask here and pass the answer to the
Django-free cores as an argument; the pages show `dtype_note()`. docs/numerics.md says what holds in each dtype.
"""
from __future__ import annotations

from django.conf import settings

from prefcore.hardware import describe_dtype, resolved_dtype_name, shown_device


def dtype_choice() -> str:
    """The setting as given: "auto", "float32" or "bfloat16"."""
    return settings.PREFLOOP_DTYPE


def product_dtype(device: str | None = None) -> str:
    """The dtype models run in here ("float32", "bfloat16"; "float16" on a GPU without bf16): the setting, with
    "auto" resolved for `device` (default: this machine's, a GPU when there is one)."""
    return resolved_dtype_name(settings.PREFLOOP_DTYPE, device)


def dtype_note(device: str | None = None) -> str:
    """One line for the pages, e.g. "bfloat16 (native bf16 on this CPU)" or "float32 (forced by PREFLOOP_DTYPE)":
    for this machine's device as the pages name it (prefcore.hardware.shown_device: no torch where no GPU shows)."""
    return describe_dtype(settings.PREFLOOP_DTYPE, device or shown_device())
