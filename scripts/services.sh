#!/usr/bin/env bash
# Installs (from Debian packages) and starts PostgreSQL and Redis on loopback, creates the prefloop role and
# database, and installs Debian's Chromium and chromedriver for the browser tests. Idempotent: run it as often as
# you like. Progress goes to stderr; stdout is only the environment to use, so `eval "$(bash scripts/services.sh)"`
# works.
set -euo pipefail

PG_PORT="${PREFLOOP_PG_PORT:-5432}"
REDIS_PORT="${PREFLOOP_REDIS_PORT:-6379}"
DB_USER=prefloop
DB_PASSWORD="${PREFLOOP_DB_PASSWORD:-prefloop}"
DB_NAME=prefloop

log() { echo "services: $*" >&2; }

# The role's SQL, with the password left to psql: run with `-v pw=...`, :'pw' is the password as a quoted SQL literal
# (a quote or backslash in it was pasted into the statement and broke it, or ran as SQL). psql expands variables
# only in SQL it reads from a file or stdin, never in -c, hence the pipe.
role_sql() { printf '%s ROLE %s LOGIN CREATEDB PASSWORD :'"'"'pw'"'"';\n' "$1" "$DB_USER"; }

# The password percent-encoded for the URL printed below: '@', ':', '/', '%' and the like in it split the URL wrong.
url_encoded() {
    local text="$1" out="" char i
    for ((i = 0; i < ${#text}; i++)); do
        char="${text:i:1}"
        case "$char" in
            [a-zA-Z0-9.~_-]) out+="$char" ;;
            *) out+="$(printf '%s' "$char" | od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g' | tr 'a-f' 'A-F')" ;;
        esac
    done
    printf '%s' "$out"
}

# Sourced (tests/test_services_script.py checks the SQL and the URL this way): the functions only, nothing started.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then return 0; fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- install what is missing (one apt-get update, one install) ------------------------------------------------
missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >&2
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# --- PostgreSQL: the Debian cluster, listening on 127.0.0.1 only ----------------------------------------------
pg_version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
if ! pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main"' | grep -q .; then
    log "creating PostgreSQL $pg_version cluster main"
    as_root pg_createcluster "$pg_version" main -p "$PG_PORT" >&2
fi
# A drop-in file (Debian's postgresql.conf includes conf.d/) rather than edits to the packaged configuration.
conf_dir="/etc/postgresql/$pg_version/main/conf.d"
wanted="$(printf "# Written by PrefLoop's scripts/services.sh: loopback only, fixed port.\nlisten_addresses = '127.0.0.1'\nport = %s\n" "$PG_PORT")"
conf_changed=0
if [ "$(cat "$conf_dir/prefloop.conf" 2>/dev/null || true)" != "$wanted" ]; then
    as_root mkdir -p "$conf_dir"
    printf '%s\n' "$wanted" | as_root tee "$conf_dir/prefloop.conf" >/dev/null
    conf_changed=1
fi
status="$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $4}')"
if [ "$status" != "online" ]; then
    log "starting PostgreSQL $pg_version on 127.0.0.1:$PG_PORT"
    as_root pg_ctlcluster "$pg_version" main start >&2
elif [ "$conf_changed" = 1 ]; then
    log "restarting PostgreSQL $pg_version (configuration changed)"
    as_root pg_ctlcluster "$pg_version" main restart >&2
fi
for _ in $(seq 60); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "PostgreSQL did not come up on 127.0.0.1:$PG_PORT"; exit 1; }

psql_admin() { as_root runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qAt "$@"; }
# CREATEDB lets pytest-django create and drop test_prefloop.
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
    log "creating role $DB_USER"
    role_sql "CREATE" | psql_admin -v pw="$DB_PASSWORD"
else
    role_sql "ALTER" | psql_admin -v pw="$DB_PASSWORD"
fi
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    log "creating database $DB_NAME"
    psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
fi

# --- Redis: bound to 127.0.0.1, no persistence (the broker's state is transient) -----------------------------
if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" != "PONG" ]; then
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save "" --appendonly no \
        --dir /tmp --pidfile "/tmp/prefloop-redis-$REDIS_PORT.pid" --logfile "/tmp/prefloop-redis-$REDIS_PORT.log"
    for _ in $(seq 40); do
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" = "PONG" ] && break
        sleep 0.25
    done
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" = "PONG" ] \
        || { log "Redis did not come up on 127.0.0.1:$REDIS_PORT"; exit 1; }
fi

log "PostgreSQL $pg_version on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT, $(chromium --version 2>/dev/null || echo 'no chromium')"
echo "export DATABASE_URL=postgres://$DB_USER:$(url_encoded "$DB_PASSWORD")@127.0.0.1:$PG_PORT/$DB_NAME"
echo "export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
echo "export CACHE_URL=redis://127.0.0.1:$REDIS_PORT/1"
echo "export PREFLOOP_PG_CLUSTER='$pg_version main'"
