"""scripts/services.sh with a password that holds quotes, '@', ':' and '/': it was pasted into the SQL (a quote ended
the literal, and what followed ran as SQL) and into the printed DATABASE_URL as it was (an '@' or '/' split the URL
wrong). The script's functions are checked by sourcing it, which starts nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dj_database_url
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "services.sh"
PASSWORD = "p@ss:w/rd%'\"; DROP ROLE x; -- é"


def sourced(call: str, **env) -> str:
    done = subprocess.run(["bash", "-c", f'source "{SCRIPT}"; {call}'], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C.UTF-8", **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_role_sql_leaves_the_password_to_psql_as_a_quoted_literal():
    sql = sourced('role_sql ALTER; role_sql CREATE', PREFLOOP_DB_PASSWORD=PASSWORD)
    assert sql.splitlines() == ["ALTER ROLE prefloop LOGIN CREATEDB PASSWORD :'pw';",
                                "CREATE ROLE prefloop LOGIN CREATEDB PASSWORD :'pw';"]
    assert "p@ss" not in sql


def test_the_printed_database_url_carries_the_password_percent_encoded():
    encoded = sourced('url_encoded "$PREFLOOP_DB_PASSWORD"', PREFLOOP_DB_PASSWORD=PASSWORD)
    assert set(encoded) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.~_-%")
    parsed = dj_database_url.parse(f"postgres://prefloop:{encoded}@127.0.0.1:5432/prefloop")
    assert (parsed["PASSWORD"], parsed["HOST"], parsed["PORT"], parsed["NAME"]) == (
        PASSWORD, "127.0.0.1", 5432, "prefloop")
    assert sourced('url_encoded prefloop') == "prefloop"  # the default is unchanged


def _local_postgres() -> bool:
    if os.geteuid() != 0 or not shutil.which("psql") or not shutil.which("runuser"):
        return False
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-qAt", "-c", "SELECT 1"],
                           capture_output=True, text=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _local_postgres(), reason="needs root and a local PostgreSQL (scripts/services.sh)")
def test_psql_runs_the_role_sql_with_such_a_password():
    """The statement the script pipes to psql, run for a throwaway role in a transaction rolled back."""
    sql = sourced('DB_USER=prefloop_quote_check; role_sql CREATE')
    script = f"BEGIN;\n{sql}SELECT rolname FROM pg_roles WHERE rolname = 'prefloop_quote_check';\nROLLBACK;\n"
    done = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-qAt",
                           "-v", f"pw={PASSWORD}"], input=script, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["prefloop_quote_check"], done.stderr
