"""Errors the core shares with every caller."""
from __future__ import annotations


class SettingError(ValueError):
    """A bad value (or name) of one setting of a configuration (SamplingConfig, DPOConfig): `name` is the setting,
    so a caller that reports fields (the API's errors[].field) names it, not only the sentence."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name

    def __reduce__(self):
        return type(self), (self.name, str(self))
