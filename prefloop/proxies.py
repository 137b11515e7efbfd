"""Which requests came through a proxy PrefLoop trusts: those whose REMOTE_ADDR is in PREFLOOP_TRUSTED_PROXIES.

Anyone can write X-Forwarded-For and X-Forwarded-Proto. Only a configured proxy's are read: the middleware here drops
both headers from every other request before anything reads them (the HTTPS redirect reads X-Forwarded-Proto, the
sign-in lockout X-Forwarded-For, prefloop.lockout.client_address). A client that reached gunicorn directly (bound to
0.0.0.0 on a cluster's web machine) picked a new X-Forwarded-For for each wrong password and was never locked out.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO")


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
            for header in FORWARDED_HEADERS:
                request.META.pop(header, None)
        return self.get_response(request)
