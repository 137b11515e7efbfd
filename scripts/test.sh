#!/usr/bin/env bash
# Runs the test suite: once on SQLite with the embedded filesystem broker (the default setup), then, when CI or
# PREFLOOP_SERVICES=1 is set, the database-touching tests again on PostgreSQL + Redis (started by
# scripts/services.sh). Extra arguments go to both pytest runs. Exits non-zero unless both passes succeed.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT
status=0
summaries=()

# Counts from pytest's JUnit report, so the closing line adds up both passes.
counts() {
    "$PYTHON" - "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 0 0")
    raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root)
n = lambda key: sum(int(s.get(key, 0)) for s in suites)
failed = n("failures") + n("errors")
print(n("tests") - failed - n("skipped"), failed, n("skipped"))
PY
}

# run_pass NAME ALLOW_EMPTY ENV... -- PYTEST_ARGS...: pytest exits 5 when nothing was collected; that is a failure
# unless ALLOW_EMPTY (a pass that selects a subset may legitimately find none).
total_passed=0 total_failed=0 total_skipped=0
run_pass() {
    local name="$1" allow_empty="$2"
    shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo "=== pass $name ==="
    env "${envs[@]}" "$PYTHON" -m pytest --junitxml="$reports/$name.xml" --durations=10 "$@"
    local rc=$?
    if [ $rc -eq 5 ] && [ "$allow_empty" = yes ]; then
        echo "pass $name: no test selected"
    elif [ $rc -eq 5 ]; then
        echo "pass $name: no test ran" >&2
        status=1
    elif [ $rc -ne 0 ]; then
        echo "pass $name: pytest exited $rc" >&2
        status=1
    fi
    read -r p f s < <(counts "$reports/$name.xml")
    summaries+=("pass $name: $p passed, $f failed, $s skipped (pytest exit $rc)")
    total_passed=$((total_passed + p)) total_failed=$((total_failed + f)) total_skipped=$((total_skipped + s))
}

# Pass 1: the whole suite on SQLite with the filesystem broker.
run_pass sqlite no -u DATABASE_URL -u CELERY_BROKER_URL -u CACHE_URL -u PREFLOOP_SERVICES -- "$@"

# Pass 2: what touches the database, on PostgreSQL + Redis with real workers. The browser and real-model tests
# ran in pass 1 and do not depend on the database engine; the tests/faults/db_pass.py plugin drops the tests
# that use no database.
if [ -n "${CI:-}" ] || [ "${PREFLOOP_SERVICES:-0}" = 1 ]; then
    if service_env="$(bash scripts/services.sh)"; then
        eval "$service_env"
        run_pass postgres-redis yes DATABASE_URL="$DATABASE_URL" CELERY_BROKER_URL="$CELERY_BROKER_URL" \
            CACHE_URL="$CACHE_URL" PREFLOOP_PG_CLUSTER="$PREFLOOP_PG_CLUSTER" PREFLOOP_SERVICES=1 \
            -- -p tests.faults.db_pass -m "not browser and not real_model" "$@"
    else
        echo "pass postgres-redis: scripts/services.sh failed" >&2
        summaries+=("pass postgres-redis: services did not start")
        status=1
    fi
fi

echo
for line in "${summaries[@]}"; do echo "$line"; done
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit $status
