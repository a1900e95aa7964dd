#!/usr/bin/env bash
# Start the ClickHouse server the tests use (CLICKHOUSE_URL=clickhouse://default:@127.0.0.1:19000/thinkwatch),
# installing Debian's clickhouse-server first if it is missing.
#
# The server is ours alone: its own configuration, data and logs under var/clickhouse/ (or
# THINKWATCH_CLICKHOUSE_DIR), listening on 127.0.0.1 only, on ports chosen not to collide with
# a system ClickHouse (9000/8123) or the other local services. Running it again while the
# server answers changes nothing; `deploy/clickhouse.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null

TCP_PORT="${THINKWATCH_CLICKHOUSE_TCP_PORT:-19000}"
HTTP_PORT="${THINKWATCH_CLICKHOUSE_HTTP_PORT:-18123}"
DIR="${THINKWATCH_CLICKHOUSE_DIR:-$PWD/var/clickhouse}"
PID_FILE="$DIR/clickhouse-server.pid"

answers() {
  clickhouse-client --host 127.0.0.1 --port "$TCP_PORT" --user default \
    --connect_timeout 2 --query "SELECT version()" 2>/dev/null
}

if [[ "${1:-}" == "stop" ]]; then
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    echo "ClickHouse stopped"
  fi
  exit 0
fi

if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
  echo "installing Debian's clickhouse-server and clickhouse-client"
  SUDO=()
  [[ "$(id -u)" == 0 ]] || SUDO=(sudo -n)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    clickhouse-server clickhouse-client
fi

if version="$(answers)"; then
  echo "ClickHouse $version answers on 127.0.0.1:$TCP_PORT"
  exit 0
fi
taken() { command -v ss >/dev/null && ss -ltn "sport = :$1" | grep -q LISTEN; }
if taken "$TCP_PORT" || taken "$HTTP_PORT"; then
  echo "port $TCP_PORT or $HTTP_PORT is taken by something that is not a ClickHouse answering as" \
    "user default; set THINKWATCH_CLICKHOUSE_TCP_PORT / THINKWATCH_CLICKHOUSE_HTTP_PORT" >&2
  exit 1
fi

mkdir -p "$DIR"/{data,tmp,user_files,format_schemas,log}
# Written on every start so that a change of port or directory takes effect.
cat >"$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$DIR/log/clickhouse-server.log</log>
        <errorlog>$DIR/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$TCP_PORT</tcp_port>
    <http_port>$HTTP_PORT</http_port>
    <path>$DIR/data/</path>
    <tmp_path>$DIR/tmp/</tmp_path>
    <user_files_path>$DIR/user_files/</user_files_path>
    <format_schema_path>$DIR/format_schemas/</format_schema_path>
    <users_config>$DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_connections>1024</max_connections>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
cat >"$DIR/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML

echo "starting ClickHouse on 127.0.0.1:$TCP_PORT (data in $DIR)"
rm -f "$PID_FILE"
clickhouse-server --daemon --config-file="$DIR/config.xml" --pid-file="$PID_FILE" \
  >>"$DIR/log/stdout.log" 2>&1
for _ in $(seq 60); do
  version="$(answers)" && break
  sleep 0.5
done
if [[ -z "${version:-}" ]]; then
  echo "ClickHouse did not answer on 127.0.0.1:$TCP_PORT within 30 s; see $DIR/log/" >&2
  tail -n 20 "$DIR/log/clickhouse-server.err.log" >&2 2>/dev/null || true
  exit 1
fi
echo "ClickHouse $version answers on 127.0.0.1:$TCP_PORT"
