"""Template filters of the job progress partial."""
from django import template

register = template.Library()


@register.filter
def time_left(seconds: float | None) -> str:
    """'about 2 min left' from an estimate in seconds; empty while none is known."""
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"about {seconds} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"
