"""/healthz for load balancers, systemd and `honcho`: is the database answering, is the message broker reachable.

200 {"status": "ok", ...} when both are; 503 naming what failed otherwise. It says which check failed and the kind of
error, never a URL, host, user or message text that could carry a secret. No sign-in: a health probe has none, and
no Host check (HealthProbeMiddleware): a probe asks by address.
"""
from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from prefloop.celery import app

BROKER_TIMEOUT_SECONDS = 3
PROBE_PATH = "/healthz"  # prefloop/urls.py routes it too (its name, healthz; any method but GET answers 405 there)


def database_ok() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def broker_ok() -> None:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)


CHECKS = {"database": database_ok, "broker": broker_ok}


def run_checks() -> dict[str, str]:
    """Each check's result: "ok", or "failed (<error class>)"."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure is the answer, not an error of the probe
            results[name] = f"failed ({type(exc).__name__})"
        else:
            results[name] = "ok"
    return results


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    failed = [name for name, result in results.items() if result != "ok"]
    body = {"status": "ok" if not failed else "failing", "checks": results}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


class HealthProbeMiddleware:
    """Answers GET /healthz before CommonMiddleware checks the Host header against ALLOWED_HOSTS.

    A probe asks by address (systemd or honcho at 127.0.0.1:8000, a load balancer at a web machine's private
    address), which ALLOWED_HOSTS, the site's public names, does not hold: Django answered it 400, and the probe saw
    a healthy app as down. Only this path and method skip the check; every other request still has its Host checked.
    The answer builds no URL from the Host, so a forged one changes nothing in it.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if request.method == "GET" and request.path_info == PROBE_PATH:
            response = healthz(request)
            response.headers.setdefault("X-Frame-Options", "DENY")  # XFrameOptionsMiddleware, below, is not reached
            return response
        return self.get_response(request)
