#!/usr/bin/env bash
# `make bench`: ../shared/bench/bench.py with ThinkWatch as the target gateway and LiteLLM
# as the peer, in one run. ThinkWatch runs as `make run` starts its gateway (embedded mode:
# SQLite, in-process caches, the batched audit writer on), provisioned by provision.sh.
# Extra arguments go to bench.py (e.g. --rounds 3). BENCH_REDACT=1 turns the personal-data
# redactor on for every request (bench/provision.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${THINKWATCH_BENCH_DIR:-$here/../shared/bench}
python=$here/.venv/bin/python
port=${BENCH_GATEWAY_PORT:-3000}
data=$here/var/bench

if ! command -v wrk >/dev/null || [ ! -x /opt/bench-venvs/litellm/bin/litellm ]; then
  echo "installing the bench tools (wrk, LiteLLM) with $shared/setup.sh"
  bash "$shared/setup.sh"
fi
bash "$here/bench/provision.sh"

# The mock upstream's address is only known when bench.py starts the target.
point_provider='from providers.models import Provider; import os; Provider.objects.update(base_url=os.environ["UPSTREAM_URL"])'
export TARGET_NAME=thinkwatch
export TARGET_URL=http://127.0.0.1:$port/v1
export TARGET_KEY=$(cat "$data/key")
export TARGET_MODEL=gpt-4o-mini
export TARGET_START_CMD="cd '$here' && THINKWATCH_DATA_DIR='$data' THINKWATCH_GATEWAY_PORT=$port DATABASE_URL= REDIS_URL= '$python' manage.py shell -c '$point_provider' && THINKWATCH_DATA_DIR='$data' THINKWATCH_GATEWAY_PORT=$port DATABASE_URL= REDIS_URL= exec '$python' -m thinkwatch.run --only gateway"
exec python3 "$shared/bench.py" --out "$here/var/bench-results" "$@"
