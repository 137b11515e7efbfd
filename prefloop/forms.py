"""Form fields shared by the apps' admins."""
from __future__ import annotations

import json
import math

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from prefcore.rows import DuplicateKey, unique_keys


class _KeyTwice(json.JSONDecodeError):
    """A key given twice, or a number JSON has no words for, as the JSONDecodeError Django's JSON field expects when
    it re-shows what was typed."""


class _NotFinite(ValueError):
    pass


def _no_constant(name: str):
    raise _NotFinite(f"{name} is not JSON: write a finite number, or null")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotFinite(f"{text} is too large for a number (it reads as Infinity, which is not JSON)")
    return number


class _UniqueKeysDecoder(json.JSONDecoder):
    # Python's json reads NaN, Infinity and -Infinity, and reads 1e309 as Infinity; none of them is JSON, and the
    # database refuses to store them (SQLite's JSON_VALID check: a 500 on saving the form).
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "object_pairs_hook": unique_keys, "parse_constant": _no_constant,
                                   "parse_float": _finite})

    def decode(self, s, *args, **kwargs):
        try:
            return super().decode(s, *args, **kwargs)
        except (DuplicateKey, _NotFinite) as exc:
            raise _KeyTwice(str(exc), s, 0) from None


class UniqueKeysJSONField(forms.JSONField):
    """Django's JSON form field, refusing an object that gives a key twice on the form (json would keep the last
    value without a word: '{"beta": 0.5, "beta": 0.05}' trained at 0.05), as every other JSON reader here does, and
    NaN, Infinity or a number too large for a float (Python's json reads them; they are not JSON)."""

    def __init__(self, **kwargs):
        kwargs["decoder"] = _UniqueKeysDecoder
        super().__init__(**kwargs)

    def to_python(self, value):
        if isinstance(value, str) and not self.disabled:
            try:
                json.loads(value, cls=self.decoder)
            except _KeyTwice as exc:
                raise ValidationError(exc.msg, code="invalid") from None
            except ValueError:
                pass  # bad JSON: Django's own message
        return super().to_python(value)


# An admin's formfield_overrides: its model's JSON fields read with UniqueKeysJSONField.
JSON_FIELDS = {models.JSONField: {"form_class": UniqueKeysJSONField}}
