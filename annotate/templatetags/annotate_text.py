"""Template filter that shows model text as sanitised markdown."""
from django import template
from django.utils.safestring import mark_safe

from prefcore.text import render_markdown

register = template.Library()


@register.filter
def model_text(text: str) -> str:
    return mark_safe(render_markdown(text))  # escaped and sanitised in render_markdown
