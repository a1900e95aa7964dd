#!/usr/bin/env bash
# `make bench`: ../shared/bench/bench.py with ThinkWatch as the target gateway and LiteLLM
# as the peer, in one run. ThinkWatch runs as `make run` starts its gateway (embedded mode:
# SQLite, in-process caches, the batched audit writer on) with a fresh data directory, one
# OpenAI provider pointing at the bench's mock upstream, the bench model registered with a
# price, and a key. Extra arguments go to bench.py (e.g. --rounds 3).
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

rm -rf "$data"
mkdir -p "$data"
export THINKWATCH_DATA_DIR=$data DATABASE_URL= REDIS_URL=
cd "$here"
"$python" manage.py migrate -v0
key=$(THINKWATCH_ADMIN_PASSWORD="Bench-admin-pw-1" THINKWATCH_PROVIDER_API_KEY="sk-bench-upstream" \
  "$python" manage.py setup --no-input --json --admin-email bench@example.com \
    --provider-type openai --provider-name bench-upstream \
    --provider-base-url http://127.0.0.1:18080/v1 --issue-key bench |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
"$python" manage.py shell -c '
from decimal import Decimal
from providers.models import AIModel, Provider, Route
model = AIModel.objects.create(model_id="gpt-4o-mini", input_price=Decimal("0.15"), output_price=Decimal("0.60"))
Route.objects.create(model=model, provider=Provider.objects.get())'

# The mock upstream's address is only known when bench.py starts the target.
point_provider='from providers.models import Provider; import os; Provider.objects.update(base_url=os.environ["UPSTREAM_URL"])'
export TARGET_NAME=thinkwatch
export TARGET_URL=http://127.0.0.1:$port/v1
export TARGET_KEY=$key
export TARGET_MODEL=gpt-4o-mini
export TARGET_START_CMD="cd '$here' && THINKWATCH_DATA_DIR='$data' THINKWATCH_GATEWAY_PORT=$port '$python' manage.py shell -c '$point_provider' && THINKWATCH_DATA_DIR='$data' THINKWATCH_GATEWAY_PORT=$port exec '$python' -m thinkwatch.run --only gateway"
exec python3 "$shared/bench.py" --out "$data/results" "$@"
