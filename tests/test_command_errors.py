"""At the command line a failed job says why in lines, not in a logged traceback (`--verbosity 2` shows it)."""
from __future__ import annotations

import io
import logging

import pytest
from django.core.management import CommandError, call_command

from generation.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("verbosity,traceback", [(1, False), (2, True)])
def test_a_failed_round_logs_one_line_unless_asked_for_more(verbosity, traceback):
    ModelVersion.objects.create(name="base", path="/nonexistent/base", is_current=True)
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with pytest.raises(CommandError, match="no decided pairs to train on yet"):
            call_command("train_round", verbosity=verbosity, stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        root.removeHandler(handler)
    logged = seen.getvalue()
    assert "failed: TrainingError: no decided pairs" in logged or (traceback and "no decided pairs" in logged)
    assert ("Traceback (most recent call last)" in logged) is traceback
    assert not handler.filters  # the command leaves the handlers as it found them
