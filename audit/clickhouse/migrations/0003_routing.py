"""How each gateway request was routed (GatewayLog.routing): the strategy, every attempt
and the reason for each choice, as JSON text."""

from audit.clickhouse.schema import Col, Features, add_missing_columns

COLUMNS = {"gateway_log": [Col("routing", "Nullable(String)", codec="ZSTD(3)")]}


def operations(database: str, features: Features) -> list[str]:
    return add_missing_columns(database, features, COLUMNS)
