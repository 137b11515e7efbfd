"""The base of PrefLoop's management commands: before a command runs, every text option and argument is checked for
what no database stores and no name holds (a NUL character; a lone surrogate, which is how Python passes on bytes
the shell could not decode as UTF-8), so such input ends in one clear line instead of a traceback."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


def _problem(value: str) -> str | None:
    if "\x00" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds bytes that are not UTF-8 text (at character {exc.start + 1})"
    return None


class Command(BaseCommand):
    def execute(self, *args, **options):
        for name, value in [*((f"argument {i + 1}", a) for i, a in enumerate(args)), *options.items()]:
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str) and (problem := _problem(item)):
                    label = name if name.startswith("argument") else f"--{name.replace('_', '-')}"
                    raise CommandError(f"{label} {problem}: {item.encode('utf-8', 'backslashreplace')[:60]!r}")
        return super().execute(*args, **options)
