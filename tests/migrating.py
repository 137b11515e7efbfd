"""Tests of a data migration: the database taken back to a set of migrations, rows made with the models as they were
then, and the database brought forward to the latest migrations again however the block ends."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@contextmanager
def models_as_of(targets: list[tuple[str, str]]) -> Iterator:
    """Migrate back to `targets` and yield the app registry of that state (`apps.get_model(app, name)`); on leaving,
    migrate forward to the latest migrations, so the block's rows go through the migrations under test."""
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    try:
        yield MigrationExecutor(connection).loader.project_state(targets).apps
    finally:
        MigrationExecutor(connection).migrate(latest)


def migrate_to(targets: list[tuple[str, str]]) -> None:
    """Inside a `models_as_of` block: migrate forward to `targets` only, to see what one migration did before the
    later ones run (the block still ends at the latest migrations)."""
    MigrationExecutor(connection).migrate(targets)
