"""Template filters of the job progress partial."""
from django import template

from prefloop import access

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """'40 s', '2 min', '1.5 h' from seconds; empty while none is known."""
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


@register.filter
def time_left(seconds: float | None) -> str:
    """'about 2 min left' from an estimate in seconds; empty while none is known."""
    return f"about {duration(seconds)} left" if seconds is not None else ""


@register.filter
def may(user, perm: str) -> bool:
    """Whether `user` may do what the admin's permission `perm` allows (prefloop.access.may): a control the server
    would refuse (403) is not shown. `{% if request.user|may:"loop.add_looprun" %}`"""
    return access.may(user, perm)


@register.filter
def may_cancel(user, job) -> bool:
    """Whether `user` may cancel `job` (the admin's change permission for its kind, as the Cancel view asks)."""
    return access.may(user, access.change_perm(type(job)))
