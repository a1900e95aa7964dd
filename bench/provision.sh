#!/usr/bin/env bash
# A fresh ThinkWatch data directory for the benchmarks (var/bench): an admin, one OpenAI
# provider pointing at the bench's mock upstream, `gpt-4o-mini` registered with a price and
# a route, and a key (kept in var/bench/key, mode 0600).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=$here/.venv/bin/python
data=$here/var/bench
rm -rf "$data"
mkdir -p "$data"
export THINKWATCH_DATA_DIR=$data DATABASE_URL= REDIS_URL=
cd "$here"
"$python" manage.py migrate -v0
THINKWATCH_ADMIN_PASSWORD="Bench-admin-pw-1" THINKWATCH_PROVIDER_API_KEY="sk-bench-upstream" \
  "$python" manage.py setup --no-input --json --admin-email bench@example.com \
    --provider-type openai --provider-name bench-upstream \
    --provider-base-url http://127.0.0.1:18080/v1 --issue-key bench |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["api_key"])' > "$data/key"
chmod 600 "$data/key"
# Governance on the bench key: a rate-limit rule and a budget, both far from triggering.
"$python" manage.py shell -c '
from decimal import Decimal
from accounts.models import ApiKey
from providers.models import AIModel, Provider, Route
from quotas.models import Budget, RateLimitRule
model = AIModel.objects.create(model_id="gpt-4o-mini", input_price=Decimal("0.15"), output_price=Decimal("0.60"))
Route.objects.create(model=model, provider=Provider.objects.get())
key = str(ApiKey.objects.get().pk)
RateLimitRule.objects.create(subject_kind="api_key", subject_id=key, window=60, limit=100_000_000, reason="bench")
Budget.objects.create(subject_kind="api_key", subject_id=key, period="month", unit="usd", limit=Decimal("1000000"), reason="bench")'
# BENCH_REDACT=1: personal data redacted before egress on every request (issue 9's cost
# measurement): one global redact rule with the pii detector.
if [ "${BENCH_REDACT:-0}" = "1" ]; then
  "$python" manage.py shell -c '
from gateway.models import GuardrailRule
GuardrailRule.objects.create(name="bench redaction", kind="detector", patterns=["pii"], applies="input", action="redact")'
fi
