"""The cores load without Django or Celery: the training command line, the samplers and the shared core package
import nothing of the web app, so they start fast and run where the app is not installed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WEB = ("django", "celery", "kombu", "prefloop", "annotate", "compare", "loop", "judges")


@pytest.mark.parametrize("module", [
    "training.dpo.train", "training.dpo.trainer", "training.dpo.data", "generation.backends",
    "generation.backends.hf", "generation.backends.vllm", "generation.backends.decoder", "prefcore.rows",
    "prefcore.chat", "prefcore.hardware", "prefcore.outcomes", "prefcore.charts",
])
def test_core_module_imports_no_web_app(module):
    code = (f"import sys, {module}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({WEB!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} loads {out.strip()}"


# The other way round: the web app loads no torch. Every manage.py command, a gunicorn worker and `make run`'s setup
# imported it with Django (the admin's modules read training.services, which read the trainer): 1.5 s of each
# command's 3.5 s, and 200 MB of each web process's 290. The pages that show the workers' dtype read it from the
# CPU's flags, and ask torch only where the machine shows a GPU (prefcore.hardware.GPU_SIGNS).
PAGES = ["/", "/annotate/", "/annotate/skipped/", "/annotate/quality/", "/annotate/rounds/", "/annotate/import/",
         "/annotate/export/", "/generation/", "/training/", "/compare/", "/compare/leaderboard/", "/compare/rounds/",
         "/loop/", "/admin/", "/account/tokens/", "/api/v1/docs", "/api/v1/openapi.json", "/api/v1/versions"]


def test_the_web_app_and_its_pages_import_no_torch(tmp_path):
    from prefcore.hardware import _no_gpu_here

    # (on a machine with a GPU the pages that show the dtype ask torch, as the workers there would)
    pages = PAGES if _no_gpu_here() else [p for p in PAGES if p not in ("/generation/", "/training/")]
    code = f"""
import os, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
assert "torch" not in sys.modules, "django.setup() and migrate imported torch"
from django.contrib.auth.models import User
from django.test import Client
client = Client(raise_request_exception=True)
client.force_login(User.objects.create_superuser("root", "root@example.com", "not-a-guess-9"))
for page in {pages!r}:
    status = client.get(page).status_code
    assert status == 200, (page, status)
    assert "torch" not in sys.modules and "transformers" not in sys.modules, page + " imported torch"
print("ok")
"""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "PREFLOOP_SERVICES")}
    env.update(DJANGO_SETTINGS_MODULE="prefloop.settings", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
               PREFLOOP_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(Path(__file__).resolve().parent.parent), timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
