import pytest
from tests.accounts.test_runtime_settings import signed_in, runtime, HOOK

def test_dump(alice):
    runtime.update({"keys.rotation_grace_hours": 48, "quotas.budget_alert_webhook_url": HOOK}, by=alice)
    html = signed_in(alice).post("/admin/settings/", {"keys.rotation_grace_hours": "x", "gateway.public_url": "http://localhost:3000", "keys.deleted_purge_days": "30", "security.login_failures_before_lock": "5", "security.login_lock_seconds": "60", "mcp.default_timeout_seconds": "30", "mcp.session_idle_seconds": "3600"}).content.decode()
    start = html.index('<div id="content-main">')
    open("/tmp/page.html", "w").write(html[start:start+9000])
