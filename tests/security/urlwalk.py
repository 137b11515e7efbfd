"""Every URL of the project with junk in its path arguments, and every parameter name a page or view reads, found
from the URL configuration, the project's forms, the views' source and the pages themselves (never listed by
hand, so a URL or field added later is walked too)."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import import_module
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from django import forms
from django.apps import apps
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern

# Junk as it travels on the wire (already percent-encoded): ids negative, zero, past 32 and 64 bits, huge, not
# numbers, non-finite; text with NUL, a lone surrogate (UTF-8 of U+D800, which no valid text holds), thousands of
# digits, and long.
JUNK = {
    "negative": "-1",
    "zero": "0",
    "2**31": str(2**31),
    "2**63": str(2**63),
    "10**30": str(10**30),
    "1e308": "1e308",
    "nan": "nan",
    "-inf": "-inf",
    "word": "abc",
    "empty": "",
    "nul": "a%00b",
    "surrogate": "%ED%A0%80",
    "5000 digits": "9" * 5000,
    "long": "x" * 3000,
    "json": quote('[{"role": "user", "content": null}]'),
}
PATH_JUNK = {"zero": "0", "2**31": str(2**31), "2**63": str(2**63), "10**30": str(10**30), "40 digits": "9" * 40,
             "word": "abc", "nul": "a%00b", "surrogate": "%ED%A0%80"}


@dataclass(frozen=True)
class Url:
    path: str  # percent-encoded
    name: str
    pattern: str  # the full pattern, the same for every path built from it
    junk_path: bool  # its path arguments are junk (so the view should stop at them)


def _project_apps() -> list:
    return [a for a in apps.get_app_configs() if Path(a.path).parent == Path(settings.BASE_DIR)]


def _converter_value(converter: str, value: str, sample: str) -> str | None:
    """A path argument: the junk itself where the converter takes it, else None (the URL would not match)."""
    if converter == "int":
        return value if value.isdigit() else None
    return value or sample


_ROUTE_ARG = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")
_REGEX_ARG = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>(?:[^()]|\([^()]*\))*)\)")


def _fill(piece, value: str, app_labels: list[str]) -> str | None:
    text = str(piece)
    if isinstance(piece, RoutePattern):
        failed = []

        def sub(m):
            filled = _converter_value(m["conv"] or "str", value, "x")
            if filled is None:
                failed.append(m["name"])
                return ""
            return filled

        out = _ROUTE_ARG.sub(sub, text)
        return None if failed else out
    assert isinstance(piece, RegexPattern)
    failed = []

    def sample(m):
        for candidate in (value, "1", *app_labels, "x"):
            if re.fullmatch(m["body"], candidate):
                return candidate
        failed.append(m["name"])
        return ""

    filled = _REGEX_ARG.sub(sample, text)
    if failed or re.search(r"[()\[\]*+?\\|]", filled.strip("^$")):
        return None
    return filled.strip("^").rstrip("$").replace("\\", "")


def all_urls(real: list[str], junk: dict[str, str] | None = None) -> list[Url]:
    """Every pattern: without arguments once; with arguments, once per real value (ids of rows that exist) and once
    per junk value its converters take."""
    junk = PATH_JUNK if junk is None else junk
    app_labels = [a.label for a in apps.get_app_configs()]
    found: dict[str, Url] = {}

    def walk(patterns, prefixes):
        for p in patterns:
            here = [*prefixes, p.pattern]
            if isinstance(p, URLResolver):
                walk(p.url_patterns, here)
                continue
            assert isinstance(p, URLPattern)
            pattern = "".join(str(piece) for piece in here)
            values = [(v, False) for v in ["1", *real]] + [(v, True) for v in junk.values()]
            for value, is_junk in values:
                parts = [_fill(piece, value, app_labels) for piece in here]
                if any(part is None for part in parts):
                    continue
                path = "/" + "".join(part.lstrip("^").rstrip("$") for part in parts)
                try:
                    resolve(path)
                except (Resolver404, UnicodeDecodeError):
                    continue
                takes_args = path != "/" + "".join(str(piece).lstrip("^").rstrip("$") for piece in here)
                found.setdefault(path, Url(path, p.name or pattern, pattern, is_junk and takes_args))

    walk(get_resolver().url_patterns, [])
    return list(found.values())


# ---- parameter names ------------------------------------------------------------------------------------------

_READS = re.compile(r"""request\.(?:GET|POST|FILES)(?:\.get(?:list)?\(|\[)\s*["'](\w+)["']""")


def _form_classes() -> list[type[forms.BaseForm]]:
    for app in _project_apps():
        try:
            import_module(f"{app.name}.forms")
        except ModuleNotFoundError:
            pass
    seen, stack = [], [forms.BaseForm]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.__module__.split(".")[0] in {a.name for a in _project_apps()}:
                seen.append(sub)
    return seen


def source_names() -> set[str]:
    """Field names of every project form (fields added in __init__ too) and every name the views read."""
    names: set[str] = set()
    for cls in _form_classes():
        names |= set(cls.base_fields)
        try:
            names |= set(cls().fields)
        except Exception:  # a form that needs arguments: its declared fields are enough
            pass
    for app in _project_apps():
        try:
            module = import_module(f"{app.name}.views")
        except ModuleNotFoundError:
            continue
        names |= set(_READS.findall(inspect.getsource(module)))
    return names


class _Inputs(HTMLParser):
    """Form field names with a value to send when the field is not the one under test, and query names in links."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}
        self.names: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("input", "select", "textarea", "button") and a.get("name"):
            name = a["name"]
            self.names.add(name)
            kind = (a.get("type") or "").lower()
            if kind in ("radio", "checkbox", "submit") and name in self.values:
                return
            if a.get("value") is not None:
                self.values[name] = a["value"]
        if tag == "option" and a.get("value") and self._select and self._select not in self.values:
            self.values[self._select] = a["value"]
        if tag == "select":
            self._select = a.get("name")
        for attr in ("href", "hx-get", "action"):
            if a.get(attr) and "?" in a[attr]:
                self.names |= {k for k, _ in parse_qsl(urlsplit(a[attr]).query, keep_blank_values=True)}

    _select = None


def page_inputs(html: str) -> _Inputs:
    parser = _Inputs()
    parser.feed(html)
    return parser


def encode(fields: dict[str, str]) -> str:
    """An urlencoded body or query from values that are already percent-encoded where they need to be."""
    return "&".join(f"{quote(k)}={v}" for k, v in fields.items())
