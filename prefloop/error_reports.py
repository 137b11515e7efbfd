"""What Django's error page and error mails may show: its own filter, plus the connection URLs PrefLoop reads.

DEBUG is off unless DEBUG=1 is set, so the page with settings and the environment is only seen in development; if it
is on, this filter still hides the settings and environment variables that name a database, broker or cache
(DATABASE_URL, CELERY_BROKER_URL, CACHE_URL, CACHES' LOCATION), and masks the password of any URL with credentials
(scheme://user:password@host) wherever it appears in a setting, the request's environment or a traceback's locals.
"""
from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)


def mask_url_passwords(text: str, substitute: str = SafeExceptionReporterFilter.cleansed_substitute) -> str:
    """The text with the password of every scheme://user:password@host URL replaced."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{substitute}@", text)


class ConnectionSafeFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|BROKER_URL|CACHE_URL|LOCATION|DSN",
        flags=re.I,
    )

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        # type(), not isinstance(): a lazy object claims to be a str but is not one to re.sub
        return mask_url_passwords(cleansed) if type(cleansed) is str else cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, mask_url_passwords(value) if type(value) is str else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]
