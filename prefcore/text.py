"""Model text made safe to show, the same on every page: CommonMark (with GFM tables and strikethrough) by
markdown-it-py, raw HTML escaped (never passed through), then sanitised with nh3; and a word-level diff of two
responses, bounded in time.

markdown-it-py follows CommonMark as the models write it: a list right after a paragraph ("Here are the steps:\n1.
...") is a list, and a list indented by two spaces under an item nests."""
from __future__ import annotations

import functools
import html
import re
import threading
from collections.abc import Sequence
from typing import NamedTuple

import nh3
from markdown_it import MarkdownIt

_local = threading.local()
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "code": {"class"}}


def _markdown() -> MarkdownIt:
    md = getattr(_local, "md", None)
    if md is None:
        # html=False: raw HTML in model text is shown as text ("<script>" reads as "<script>", never runs).
        md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
        _local.md = md
    return md


@functools.lru_cache(maxsize=512)
def render_markdown(text: str) -> str:
    """HTML for model (or prompt) text: markdown rendered, raw HTML escaped, the result sanitised.

    Kept per process for the texts shown most (a round's guidelines on every request, a pair on reload and to each
    of its k annotators): the same text always renders the same."""
    return nh3.clean(_markdown().render(text or ""), attributes=_ATTRIBUTES)


_WORDS = re.compile(r"\s+|[^\s]+")
# Steps (token comparisons and diagonals tried) one word diff may take: Myers' algorithm costs about
# (N + M) * D for N and M tokens and D differences, so two similar answers of thousands of words diff in a
# fraction of this, while two answers that share little give up here (about 0.1 s of Python) instead of running
# for minutes, as difflib's SequenceMatcher did (it grew about cubically).
MAX_DIFF_STEPS = 200_000


class WordDiff(NamedTuple):
    left: str  # escaped HTML, words missing from the right in <del>
    right: str  # escaped HTML, words missing from the left in <ins>
    shown: bool  # False: the texts differ too much to diff within MAX_DIFF_STEPS; both are plain, unmarked


def kept_tokens(a: Sequence, b: Sequence, max_steps: int = MAX_DIFF_STEPS) -> tuple[list[bool], list[bool]] | None:
    """Which tokens of a and of b a shortest edit script keeps (the longest common subsequence), by Myers' greedy
    O((N + M) D) algorithm after trimming the common start and end; None once it has taken more than max_steps."""
    n, m = len(a), len(b)
    start = 0
    while start < n and start < m and a[start] == b[start]:
        start += 1
    end = 0
    while end < n - start and end < m - start and a[n - 1 - end] == b[m - 1 - end]:
        end += 1
    kept_a, kept_b = [True] * n, [True] * m
    x_hi, y_hi = n - end, m - end  # the middle to diff: a[start:x_hi] against b[start:y_hi]
    width, height = x_hi - start, y_hi - start
    steps = start + end
    v = {1: 0}
    trace = []
    for d in range(width + height + 1):
        trace.append(dict(v))
        for k in range(-d, d + 1, 2):
            x = v[k + 1] if k == -d or (k != d and v[k - 1] < v[k + 1]) else v[k - 1] + 1
            y = x - k
            while x < width and y < height and a[start + x] == b[start + y]:
                x, y = x + 1, y + 1
                steps += 1
            steps += 1
            v[k] = x
            if x >= width and y >= height:
                _backtrack(trace, width, height, start, kept_a, kept_b)
                return kept_a, kept_b
        if steps > max_steps:
            return None
    return kept_a, kept_b  # not reached: the loop ends on d = width + height at the latest


def _backtrack(trace: list[dict], x: int, y: int, offset: int, kept_a: list[bool], kept_b: list[bool]) -> None:
    """Mark the tokens the edit script deletes (a) and inserts (b), walking the furthest points back from the end."""
    for d in range(len(trace) - 1, 0, -1):
        v, k = trace[d], x - y
        prev_k = k + 1 if k == -d or (k != d and v[k - 1] < v[k + 1]) else k - 1
        prev_x = v[prev_k]
        prev_y = prev_x - prev_k
        while x > prev_x and y > prev_y:  # the snake after the edit: kept
            x, y = x - 1, y - 1
        if x == prev_x:
            kept_b[offset + prev_y] = False  # inserted
        else:
            kept_a[offset + prev_x] = False  # deleted
        x, y = prev_x, prev_y


def _marked(tokens: list[str], kept: list[bool], tag: str) -> str:
    out, run = [], []
    for token, keep in zip(tokens, kept, strict=True):
        if keep:
            if run:
                out.append(f"<{tag}>{html.escape(''.join(run))}</{tag}>")
                run = []
            out.append(html.escape(token))
        else:
            run.append(token)
    if run:
        out.append(f"<{tag}>{html.escape(''.join(run))}</{tag}>")
    return "".join(out)


def word_diff(left: str, right: str, max_steps: int = MAX_DIFF_STEPS) -> WordDiff:
    """Escaped HTML of each text with the words missing from the other marked (<del> on the left, <ins> right);
    unmarked (shown=False) when the texts differ too much to diff within max_steps."""
    a, b = _WORDS.findall(left or ""), _WORDS.findall(right or "")
    kept = kept_tokens(a, b, max_steps)
    if kept is None:
        return WordDiff(html.escape(left or ""), html.escape(right or ""), False)
    return WordDiff(_marked(a, kept[0], "del"), _marked(b, kept[1], "ins"), True)

