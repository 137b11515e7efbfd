"""Work run at the same moment from several threads, each with its own database connection (a race, performed)."""
from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def run_at_once(works: dict[str, Callable[[], object]], *, release: threading.Event | None = None,
                timeout: float = 120) -> list[str]:
    """Start each work in a thread named by its key and wait for all; returns what failed, as "name: Type: message".
    `release` (an event one work waits on while another holds a lock) is set as each work ends, so a waiting work
    never outlives a peer that failed before setting it."""
    errors: list[str] = []

    def run(name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            if release is not None:
                release.set()
            connection.close()

    threads = [threading.Thread(target=run, args=(name, work), name=name) for name, work in works.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors
