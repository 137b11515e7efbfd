"""WSGI entry point: Django's handler, building requests that set aside a charset that is no character set
(prefloop.request_limits.CharsetCheckedRequest), so it is refused with a 400 instead of failing with a 500."""
import os

import django
from django.core.handlers.wsgi import WSGIHandler

from prefloop.request_limits import CharsetCheckedRequest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")
django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does


class Handler(WSGIHandler):
    request_class = CharsetCheckedRequest


application = Handler()
