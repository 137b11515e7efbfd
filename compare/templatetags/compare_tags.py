"""Template filters of the compare pages: model answers as sanitised HTML, ratings as whole points."""
import math

from django import template
from django.utils.safestring import mark_safe

from prefcore.text import render_markdown

register = template.Library()


@register.filter
def answer(text: str) -> str:
    return mark_safe(render_markdown(text))  # noqa: S308 - sanitised by nh3 in render_markdown


@register.filter
def points(value) -> str:
    """A rating as a whole number, or a dash when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.0f}"


@register.filter
def signed(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.0f}"


@register.filter
def number(value) -> str:
    """A metric with four significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}"


@register.filter
def percent_change(value) -> str:
    """0.13 -> "+13%"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:+.0%}"
