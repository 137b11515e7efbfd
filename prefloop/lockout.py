"""Sign-in lockout, through django-axes: the three hooks settings.py names (AXES_*_CALLABLE) for PrefLoop.

Axes sits in the authentication backends, so every sign-in form (the app's and the admin's) is covered, and the
password-change form (CountedPasswordChangeForm) checks the current password through them too. A lockout
is keyed on the username *and* the client address: after PREFLOOP_LOGIN_MAX_FAILURES failures for one name from one
address, that name is refused from that address for PREFLOOP_LOGIN_WINDOW_SECONDS after the last counted failure.
The username is normalised exactly as Django's login form normalises it (NFKC, stripped), so a full-width or
otherwise compatible spelling of a name shares its count. The address is REMOTE_ADDR, or, behind
PREFLOOP_TRUSTED_PROXY_COUNT proxies that each append to X-Forwarded-For, the address the outermost one saw (read
only from a request that came from PREFLOOP_TRUSTED_PROXIES).

Administrators see the lockouts under "Axes" in the admin and lift them there or with `manage.py axes_reset_username
NAME` (and `axes_reset_ip`, `axes_reset_ip_username`, `axes_reset`), see docs/deployment.md.
"""
from __future__ import annotations

import ipaddress
import math
import unicodedata
from datetime import timedelta

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Max, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.utils import timezone

from prefloop.proxies import from_trusted_proxy

RECORDED_USERNAME_LENGTH = AccessAttempt._meta.get_field("username").max_length


def normalised_username(value: object) -> str | None:
    """A username as Django's login form hands it to authenticate(): NFKC-normalised and stripped."""
    if not isinstance(value, str):
        return None
    return unicodedata.normalize("NFKC", value).strip()


def lockout_username(request: HttpRequest | None, credentials: dict | None = None) -> str | None:
    """The name a failure is counted under: from the credentials authenticate() saw, else the posted form.

    Cut to what axes' record holds (255 characters): Django's login form hands authenticate() a name of any length,
    and no account's name is that long, so names that share their first 255 characters share a count (stricter,
    never looser) instead of failing to be recorded.
    """
    field = get_user_model().USERNAME_FIELD
    if credentials and credentials.get(field) is not None:
        name = normalised_username(credentials.get(field))
    else:
        data = getattr(request, "POST", None) or {}
        name = normalised_username(data.get(field))
    return None if name is None else name[:RECORDED_USERNAME_LENGTH]


def _valid_address(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((value or "").strip()))
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, unless the settings say how many proxies in front of us to trust and the
    request came from one of them (PREFLOOP_TRUSTED_PROXIES).

    Each trusted proxy appends the address it received the request from to X-Forwarded-For, so with N of them the
    client is the N-th entry from the right; anything further left was written by the client and is ignored. A
    request from any other address is keyed on its REMOTE_ADDR whatever its header says: it reached the app without
    the proxy, and wrote the header itself. A header shorter than N (a request that bypassed the proxies) or an
    entry that is no address falls back to REMOTE_ADDR, which keys the lockout on the proxy: stricter, never looser.
    """
    remote = _valid_address(request.META.get("REMOTE_ADDR"))
    proxies = settings.PREFLOOP_TRUSTED_PROXY_COUNT
    if proxies <= 0 or not from_trusted_proxy(request):
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    if len(hops) < proxies:
        return remote
    return _valid_address(hops[-proxies]) or remote


def check_proxy_count(app_configs=None, **kwargs) -> list:
    """`check --deploy`: in production the app sits behind an HTTPS proxy (docs/deployment.md), so with
    PREFLOOP_TRUSTED_PROXY_COUNT at 0 every client has the proxy's address, and a hundred wrong passwords from anyone
    lock every account out of signing in (the per-address limit), ten at one name lock that name for everyone."""
    from django.core import checks

    if not settings.PRODUCTION or settings.PREFLOOP_TRUSTED_PROXY_COUNT > 0:
        return []
    return [checks.Warning(
        "PREFLOOP_TRUSTED_PROXY_COUNT is 0, so the sign-in lockout keys every client by REMOTE_ADDR: behind the "
        "HTTPS proxy production needs, that is the proxy's address, and anyone can lock everyone out of signing in",
        hint="set PREFLOOP_TRUSTED_PROXY_COUNT to the number of proxies that append to X-Forwarded-For (1 for one "
             "nginx, see docs/deployment.md), and PREFLOOP_TRUSTED_PROXIES to the address the app sees them connect "
             "from when that is not this machine; only where clients reach the app with no proxy in between is 0 "
             "right",
        id="prefloop.W001")]


def _address_failures(address: str) -> dict:
    """This address's failed sign-ins within the window, over every name (axes keeps a row per name and address):
    {"n": how many, "last": when}. An IPv6 address counts with its /64, the network one client is usually given
    (counted one address at a time, a new address for each guess was never slowed)."""
    since = timezone.now() - timedelta(seconds=settings.PREFLOOP_LOGIN_WINDOW_SECONDS)
    recent = AccessAttempt.objects.filter(attempt_time__gte=since)
    ip = ipaddress.ip_address(address)
    if ip.version == 4 or ip.ipv4_mapped:
        return recent.filter(ip_address=address).aggregate(n=Sum("failures_since_start"), last=Max("attempt_time"))
    network = ipaddress.ip_network(f"{ip}/64", strict=False)
    rows = [(n, t) for a, n, t in recent.filter(ip_address__contains=":").values_list(
        "ip_address", "failures_since_start", "attempt_time") if _valid_address(a) and ipaddress.ip_address(a) in network]
    return {"n": sum(n for n, _ in rows), "last": max((t for _, t in rows), default=None)}


class AddressThrottleBackend:
    """First of the authentication backends: refuses every sign-in from an address with
    PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS failures within the window, whatever the name. The lock per name and
    address (axes) never slowed a spray: a few guesses at every account's password from one address. The limit is
    looser than the one per name, so people behind one office address are not locked out by each other's typos.
    It has no get_user (nor BaseBackend's, which finds no one): a session is never this backend's to restore."""

    def authenticate(self, request, **credentials):
        address = client_address(request) if request is not None else None
        if address is None:
            return None
        if (_address_failures(address)["n"] or 0) >= settings.PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS:
            request.axes_locked_out = True  # AxesMiddleware answers with lockout_response
            request.prefloop_address_locked = True
            raise PermissionDenied("too many failed sign-ins from this address")
        return None


def seconds_locked(username: str | None, address: str | None) -> int:
    """How long sign-ins for this name from this address stay refused (at least 1 while locked)."""
    last = AccessAttempt.objects.filter(username=username, ip_address=address).aggregate(t=Max("attempt_time"))["t"]
    if last is None:
        return settings.PREFLOOP_LOGIN_WINDOW_SECONDS
    left = (last - timezone.now()).total_seconds() + settings.PREFLOOP_LOGIN_WINDOW_SECONDS
    return max(1, math.ceil(left))


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """The sign-in page that was posted to (the app's or the admin's), empty, with a message and status 429."""
    if getattr(request, "prefloop_address_locked", False):
        last = _address_failures(client_address(request))["last"]
        left = settings.PREFLOOP_LOGIN_WINDOW_SECONDS if last is None else (
            (last - timezone.now()).total_seconds() + settings.PREFLOOP_LOGIN_WINDOW_SECONDS)
        wait, what = max(1, math.ceil(left)), "from this address"
    else:
        wait = seconds_locked(lockout_username(request, credentials), getattr(request, "axes_ip_address", None))
        what = "for this username"
    minutes = math.ceil(wait / 60)
    messages.error(
        request,
        f"Too many failed sign-in attempts {what}. Try again in {minutes} minute"
        f"{'s' if minutes != 1 else ''}, or ask an administrator to unlock it.",
    )
    if isinstance(original_response, TemplateResponse) and original_response.context_data:
        context = dict(original_response.context_data)
        form = context.get("form")
        if isinstance(form, PasswordChangeForm):  # the password-change page: shown again, empty
            context["form"] = type(form)(request.user)
        else:
            context["form"] = type(form)(request) if isinstance(form, AuthenticationForm) else AuthenticationForm(request)
        response = TemplateResponse(request, original_response.template_name, context, status=429).render()
    else:
        context = {"form": AuthenticationForm(request), "next": request.POST.get("next", "")}
        response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(wait)
    return response


def password_confirms(request: HttpRequest | None, user, password: str) -> bool:
    """Whether `password` is the signed-in `user`'s own, checked through authenticate(): a wrong one counts as a failed
    sign-in for the account's name and the client's address, and once those are locked every answer is no. A form
    that asks for it so a stolen session cannot act alone must not become a way to guess the password unthrottled."""
    return authenticate(request, username=user.get_username(), password=password) is not None


class CountedPasswordChangeForm(PasswordChangeForm):
    """Django's password change, with the current password checked through authenticate(): a wrong one counts as a
    failed sign-in for the account's name and the client's address, and once those are locked the form is refused
    too. Django's own form compares the password directly, so a stolen session could guess it without limit."""

    def __init__(self, user, *args, request: HttpRequest | None = None, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        old = self.cleaned_data["old_password"]
        if not password_confirms(self.request, self.user, old):
            raise ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old


class PasswordChangeView(auth_views.PasswordChangeView):
    form_class = CountedPasswordChangeForm

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "request": self.request}
