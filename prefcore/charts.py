"""Line charts drawn on the server as inline SVG: no chart library, no CDN. Every label is escaped."""
from __future__ import annotations

import math
from html import escape

COLOURS = ("#2f6fde", "#d9822b", "#1f8a4c", "#c23b3b", "#8e44ad", "#5d6d7e")
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 34, 26


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About `count` round numbers covering [low, high]: the multiples of one step, counted by index (a step under
    half a float's spacing there left `value += step` where it was, and the loop never ended). A range too narrow to
    hold round numbers apart from its ends, or wider than floats reach, gets its two ends."""
    if not high > low:
        return [low]
    raw = (high - low) / count
    if not math.isfinite(raw) or raw <= 0:
        return [low, high] if math.isfinite(low) and math.isfinite(high) else []
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    ticks = [k * step for k in range(first, last + 1)] if 0 <= last - first <= 4 * count else []
    ticks = [0.0 if abs(t) < step * 1e-9 else t for t in ticks]
    if len(set(ticks)) != len(ticks) or not ticks:  # the range is a few floats wide: the steps round together
        return [low, high]
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _bounds(values: list[float]) -> tuple[float, float]:
    """The y range drawn: the values' with 5% room, or 10% of their size around them when they are one value, or
    within a millionth of each other (a float or two apart: no axis can show that difference)."""
    low, high = min(values), max(values)
    if high - low <= 1e-6 * max(abs(low), abs(high)):
        pad = max(abs(low), abs(high)) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    if not math.isfinite(pad):  # values near the float limit: no room to add
        return low, high
    return low - pad, high + pad


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    width: int = 480,
    height: int = 220,
    title: str = "",
    hlines: dict[str, float] | None = None,
) -> str:
    """An SVG line chart of named (x, y) series, with labelled dashed horizontal reference lines (hlines).

    Non-finite points are skipped; with no points at all the chart says "no data yet".
    """
    hlines = hlines or {}
    clean = {name: [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
             for name, pts in series.items()}
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="16">{escape(title)}</text>',
    ]
    if not xs:
        parts.append(f'<text class="chart-empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                     "no data yet</text></svg>")
        return "".join(parts)
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1)
    y0, y1 = _bounds(ys + [v for v in hlines.values() if math.isfinite(v) and _near(v, ys)])
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * plot_h

    parts.append(f'<rect class="chart-frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none"/>')
    for tick in nice_ticks(y0, y1):
        parts.append(f'<line class="chart-grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(tick):.1f}" '
                     f'y2="{sy(tick):.1f}"/><text class="chart-tick" x="{LEFT - 4}" y="{sy(tick) + 4:.1f}" '
                     f'text-anchor="end">{_fmt(tick)}</text>')
    for tick in nice_ticks(x0, x1):
        parts.append(f'<text class="chart-tick" x="{sx(tick):.1f}" y="{height - 8}" '
                     f'text-anchor="middle">{_fmt(tick)}</text>')
    for label, value in hlines.items():
        if math.isfinite(value) and y0 <= value <= y1:
            parts.append(f'<line class="chart-ref" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(value):.1f}" '
                         f'y2="{sy(value):.1f}" stroke-dasharray="4 3"/><text class="chart-ref-label" '
                         f'x="{LEFT + plot_w - 2}" y="{sy(value) - 3:.1f}" text-anchor="end">{escape(label)}</text>')
    legend_x = width - RIGHT
    for k, (name, pts) in enumerate(reversed(list(clean.items()))):
        colour = COLOURS[(len(clean) - 1 - k) % len(COLOURS)]
        parts.append(f'<text class="chart-legend" x="{legend_x}" y="28" text-anchor="end" fill="{colour}">'
                     f"{escape(name)}</text>")
        legend_x -= 8 + 7 * len(name)
        if not pts:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        if len(pts) == 1:
            parts.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{colour}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}">'
                         f"<title>{escape(name)}</title></polyline>")
    parts.append("</svg>")
    return "".join(parts)


def _near(value: float, ys: list[float]) -> bool:
    """Whether a reference line is close enough to the data to widen the y range for it."""
    low, high = min(ys), max(ys)
    span = max(high - low, abs(high), abs(low), 1e-9)
    return low - span <= value <= high + span
