"""A ceiling on request bodies: a request declaring more than PREFLOOP_MAX_UPLOAD_BYTES is refused with 413
before anything reads it (Django's own limits cover form fields and the number of files, not their size)."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return HttpResponse("Bad Content-Length header.", status=400, content_type="text/plain")
        limit = settings.PREFLOOP_MAX_UPLOAD_BYTES
        if length > limit:
            return HttpResponse(
                f"The upload is too large: {length / 2**20:.1f} MiB, the limit is {limit / 2**20:.0f} MiB "
                "(PREFLOOP_MAX_UPLOAD_BYTES).",
                status=413, content_type="text/plain",
            )
        return self.get_response(request)
