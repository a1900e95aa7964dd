"""Redaction counts and the response cache's outcome on gateway records
(GatewayLog.redactions, GatewayLog.cache), as JSON text."""

from audit.clickhouse.schema import Col, Features, add_missing_columns

COLUMNS = {
    "gateway_log": [Col("redactions", "Nullable(String)"), Col("cache", "Nullable(String)")]
}


def operations(database: str, features: Features) -> list[str]:
    return add_missing_columns(database, features, COLUMNS)
