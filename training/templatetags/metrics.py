"""`get_item`: read a metric whose name has a slash (rewards/accuracy) in a template."""
from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None
