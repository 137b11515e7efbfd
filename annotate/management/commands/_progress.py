"""A tqdm bar on stderr for the import commands."""
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def bar(desc: str, total: int | None = None):
    with tqdm(total=total, desc=desc, unit="row", leave=False) as progress:
        yield progress.update
