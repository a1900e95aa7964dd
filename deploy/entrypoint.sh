#!/bin/sh
# Runs one ThinkWatch role in the foreground: the image's ENTRYPOINT (under tini) and the
# systemd units' ExecStart. Extra arguments go to the role's command.
#
#   gateway   the AI gateway on THINKWATCH_GATEWAY_PORT (3000), as `make run` starts it
#   console   console and management API on THINKWATCH_CONSOLE_PORT (3001), as `make run` does
#   worker    Celery worker, without beat (run exactly one `beat` beside any number of these)
#   beat      Celery beat: the schedule of thinkwatch/celery.py; exactly one per installation
#   migrate   database migrations, then ClickHouse's when CLICKHOUSE_URL is set; exits
#
# gateway and console go through thinkwatch/run.py, which also applies pending migrations
# and forwards SIGTERM with the drain time. run.py has no worker without beat, no beat and
# no migrate, so those three are spelled out here.
set -eu
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 gateway|console|worker|beat|migrate [arguments for that role]" >&2
}

if [ "$#" -eq 0 ]; then
  usage
  exit 64
fi
role="$1"
shift

case "$role" in
  gateway | console)
    exec python -m thinkwatch.run --only "$role" "$@"
    ;;
  worker)
    # Prefork with two processes unless told otherwise: Celery's default is one per CPU
    # of the host, which in a container is rarely what the container was given.
    exec celery -A thinkwatch worker --loglevel "${THINKWATCH_LOG_LEVEL:-INFO}" \
      --concurrency 2 "$@"
    ;;
  beat)
    exec celery -A thinkwatch beat --loglevel "${THINKWATCH_LOG_LEVEL:-INFO}" "$@"
    ;;
  migrate)
    python manage.py migrate --no-input "$@"
    if [ -n "${CLICKHOUSE_URL:-}${CLICKHOUSE_URL_FILE:-}" ]; then
      exec python manage.py clickhouse_migrate
    fi
    ;;
  *)
    echo "unknown role: $role" >&2
    usage
    exit 64
    ;;
esac
