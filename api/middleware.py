"""Every answer under /api/ that is an error is JSON `{"detail": ...}`, as docs/api.md promises: the API's own
refusals are already, but a path no operation serves (Django's 404 page) and a method an operation does not take
(ninja's plain-text 405) were HTML, which a client parsing every answer as JSON chokes on."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError

KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def _detail(request: HttpRequest, response: HttpResponse) -> str:
    if response.status_code == 404:
        return f"no API operation at {request.path} (the operations are listed in /api/v1/openapi.json)"
    if response.status_code == 405:
        allowed = response.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}" + (f" (allowed: {allowed})" if allowed else "")
    # a page's refusal with its reason (prefloop.errors: too many fields, an unknown host, ...), else the phrase
    return getattr(response, "prefloop_reason", None) or response.reason_phrase


class JsonErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (response.status_code < 400 or not request.path.startswith("/api/") or response.streaming
                or response.get("Content-Type", "").startswith("application/json")):
            return response
        answer = JsonResponse({"detail": _detail(request, response)}, status=response.status_code)
        for header in KEPT_HEADERS:
            if header in response:
                answer[header] = response[header]
        return answer

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """An upload Django cannot read as multipart (no boundary, a part's headers over Django's limit, a body cut
        short) fails in the view, when ninja reads its form: left to Django it was a bare 400 "Bad Request", logged
        with a traceback as if the server had failed. The caller is told what is wrong instead; the request is
        still logged as a 400, as every refused one is."""
        if not isinstance(exception, MultiPartParserError) or not request.path.startswith("/api/"):
            return None
        reason = str(exception).strip().rstrip(".") or type(exception).__name__
        return JsonResponse({"detail": f"the upload is not valid multipart/form-data: {reason}"}, status=400)
