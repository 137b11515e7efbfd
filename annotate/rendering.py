"""Model text made safe to show: markdown with raw HTML escaped (never passed through) then sanitised with nh3,
and a word-level diff of two responses. Plain Python: no Django here."""
from __future__ import annotations

import difflib
import functools
import html
import re
import threading

import markdown
import nh3

_local = threading.local()
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "code": {"class"}}


def _markdown() -> markdown.Markdown:
    md = getattr(_local, "md", None)
    if md is None:
        md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists"])
        # Raw HTML in model text is shown as text: "<script>" must read as "<script>", not vanish or run.
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        _local.md = md
    return md


@functools.lru_cache(maxsize=512)
def render_markdown(text: str) -> str:
    """HTML for model (or prompt) text: markdown rendered, raw HTML escaped, the result sanitised.

    Kept per process for the texts shown most (a round's guidelines on every request, a pair on reload and to each
    of its k annotators): the same text always renders the same."""
    md = _markdown()
    md.reset()
    return nh3.clean(md.convert(text or ""), attributes=_ATTRIBUTES)


_WORDS = re.compile(r"\s+|[^\s]+")


def word_diff(left: str, right: str) -> tuple[str, str]:
    """Escaped HTML of each text with the words missing from the other marked (<del> on the left, <ins> right)."""
    a, b = _WORDS.findall(left or ""), _WORDS.findall(right or "")
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        chunk_a, chunk_b = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            out_a.append(chunk_a)
            out_b.append(chunk_b)
            continue
        if chunk_a:
            out_a.append(f"<del>{chunk_a}</del>")
        if chunk_b:
            out_b.append(f"<ins>{chunk_b}</ins>")
    return "".join(out_a), "".join(out_b)
