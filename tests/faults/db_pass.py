"""pytest plugin for the PostgreSQL + Redis pass of scripts/test.sh: keeps only the tests that use the database.

Loaded with `-p tests.faults.db_pass`; a test counts as touching the database when it carries the django_db
marker or requests (directly or through other fixtures) one of pytest-django's database fixtures.
"""
from __future__ import annotations

import pytest

# (django_db_blocker is not one: pytest-django's autouse fixtures request it for every test.)
DB_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server",
               "django_user_model", "admin_user", "admin_client"}


def uses_database(item: pytest.Item) -> bool:
    if item.get_closest_marker("django_db") is not None:
        return True
    return bool(DB_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = [item for item in items if uses_database(item)]
    dropped = [item for item in items if not uses_database(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
