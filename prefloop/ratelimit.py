"""Login rate limiting: after too many failed sign-ins for one username from one address, refuse more for a while.

Failures are counted in Django's cache (a file cache on one box, Redis in a cluster: see CACHES in settings), as a
sliding window of timestamps per (username, address). The middleware answers a blocked POST to the login page with
the page itself, a clear message and status 429, before the password is even checked.
"""
from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse


def client_address(request: HttpRequest | None) -> str:
    """The address the request came from (the proxy's, behind one: the limit then falls on the username alone)."""
    return (request.META.get("REMOTE_ADDR") if request is not None else None) or "unknown"


def _key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().casefold()}\0{address}".encode()).hexdigest()
    return f"prefloop:login-failures:{digest}"


def recent_failures(username: str, address: str, now: float | None = None) -> list[float]:
    """Times of the failed sign-ins for this username from this address within the window, oldest first."""
    now = time.time() if now is None else now
    window = settings.PREFLOOP_LOGIN_WINDOW_SECONDS
    return [t for t in cache.get(_key(username, address), []) if now - t < window]


def record_failure(username: str, address: str, now: float | None = None) -> int:
    """Count one failed sign-in; returns how many fall within the window now."""
    now = time.time() if now is None else now
    # Only the newest max_failures matter; keeping no more bounds the entry's size.
    times = (recent_failures(username, address, now) + [now])[-settings.PREFLOOP_LOGIN_MAX_FAILURES :]
    cache.set(_key(username, address), times, timeout=settings.PREFLOOP_LOGIN_WINDOW_SECONDS)
    return len(times)


def reset(username: str, address: str) -> None:
    cache.delete(_key(username, address))


def seconds_blocked(username: str, address: str, now: float | None = None) -> int:
    """How long sign-ins for this username from this address stay refused; 0 when they are allowed."""
    now = time.time() if now is None else now
    times = recent_failures(username, address, now)
    if len(times) < settings.PREFLOOP_LOGIN_MAX_FAILURES:
        return 0
    # Allowed again once the oldest counted failure leaves the window.
    return max(1, math.ceil(times[-settings.PREFLOOP_LOGIN_MAX_FAILURES] + settings.PREFLOOP_LOGIN_WINDOW_SECONDS - now))


@receiver(user_login_failed)
def _count_failure(sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
    username = credentials.get("username")
    if username:
        record_failure(username, client_address(request))


@receiver(user_logged_in)
def _forget_failures(sender, request: HttpRequest | None, user, **kwargs) -> None:
    reset(user.get_username(), client_address(request))


class LoginRateLimitMiddleware:
    """Refuses a POST to the login page while its username and address are over the limit."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path == reverse("login"):
            username = request.POST.get("username", "")
            wait = seconds_blocked(username, client_address(request)) if username else 0
            if wait:
                return self.refuse(request, wait)
        return self.get_response(request)

    def refuse(self, request: HttpRequest, wait: int) -> HttpResponse:
        minutes = math.ceil(wait / 60)
        messages.error(
            request,
            f"Too many failed sign-in attempts for this username. Try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}, or ask an administrator to reset your password.",
        )
        context = {"form": AuthenticationForm(request), "next": request.POST.get("next", "")}
        response = render(request, "registration/login.html", context, status=429)
        response["Retry-After"] = str(wait)
        return response
