"""Content-policy hits on gateway records (GatewayLog.guardrails), as JSON text."""

from audit.clickhouse.schema import Col, Features, add_missing_columns

COLUMNS = {"gateway_log": [Col("guardrails", "Nullable(String)")]}


def operations(database: str, features: Features) -> list[str]:
    return add_missing_columns(database, features, COLUMNS)
