"""Fixtures the training tests share with others."""
from tests.compare.conftest import candidate  # noqa: F401 (the promotion gate's candidate round, a fixture)
