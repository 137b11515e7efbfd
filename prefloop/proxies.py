"""Which requests came through a proxy PrefLoop trusts: those whose REMOTE_ADDR is in PREFLOOP_TRUSTED_PROXIES.

Anyone can write X-Forwarded-For and X-Forwarded-Proto. Only a configured proxy's are read: the middleware here drops
both headers from every other request before anything reads them (the HTTPS redirect reads X-Forwarded-Proto, the
sign-in lockout X-Forwarded-For, prefloop.lockout.client_address). A client that reached gunicorn directly (bound to
0.0.0.0 on a cluster's web machine) picked a new X-Forwarded-For for each wrong password and was never locked out.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO")
log = logging.getLogger(__name__)
# Addresses whose forwarded headers were dropped and said in the log, once each (up to this many, then no more).
_TOLD: set[str] = set()
TELL_AT_MOST = 100


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the request's connection comes from an address (or network) in PREFLOOP_TRUSTED_PROXIES."""
    try:
        remote = ipaddress.ip_address((request.META.get("REMOTE_ADDR") or "").strip())
    except ValueError:
        return False
    if remote.version == 6 and remote.ipv4_mapped:  # ::ffff:127.0.0.1 from a dual-stack socket is 127.0.0.1
        remote = remote.ipv4_mapped
    for proxy in settings.PREFLOOP_TRUSTED_PROXIES:
        network = ipaddress.ip_network(proxy, strict=False)
        if remote.version == network.version and remote in network:
            return True
    return False


class UntrustedForwardedHeadersMiddleware:
    """Drops X-Forwarded-For and X-Forwarded-Proto from a request that did not come from a trusted proxy."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not from_trusted_proxy(request):
            dropped = [h for h in FORWARDED_HEADERS if request.META.pop(h, None) is not None]
            if dropped:
                _tell(request.META.get("REMOTE_ADDR") or "", dropped)
        return self.get_response(request)


def _tell(address: str, dropped: list[str]) -> None:
    """Say once per address that its forwarded headers were dropped: behind a proxy the app does not trust (one on
    another machine, a platform's router, a unix socket), every request is redirected to HTTPS again and again, and
    the log is where an operator looks first."""
    if address in _TOLD or len(_TOLD) >= TELL_AT_MOST:
        return
    _TOLD.add(address)
    names = " and ".join(h.removeprefix("HTTP_").replace("_", "-").title() for h in dropped)
    log.warning("%s from %s ignored: it is not in PREFLOOP_TRUSTED_PROXIES (%s); if it is your proxy, add it there "
                "(docs/deployment.md)", names, address or "a connection with no address (a unix socket)",
                ", ".join(settings.PREFLOOP_TRUSTED_PROXIES) or "none")
