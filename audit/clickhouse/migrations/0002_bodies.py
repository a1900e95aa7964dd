"""Captured bodies (audit/bodies.py): the columns GatewayLog and McpLog gained.

18.16 has no `ADD COLUMN IF NOT EXISTS`: see schema.add_missing_columns."""

from audit.clickhouse.schema import Col, Features, add_missing_columns

_TEXT = "ZSTD(3)"

COLUMNS = {
    "gateway_log": [
        Col("request_body", "Nullable(String)", codec=_TEXT),
        Col("response_body", "Nullable(String)", codec=_TEXT),
        Col("body_truncated", "Nullable(UInt8)"),
        Col("body_redactions", "Nullable(String)"),
        Col("body_ref", "Nullable(String)"),
        Col("body_sha256", "Nullable(String)"),
    ],
    "mcp_log": [
        Col("result", "Nullable(String)", codec=_TEXT),
        Col("body_truncated", "Nullable(UInt8)"),
        Col("body_redactions", "Nullable(String)"),
        Col("body_ref", "Nullable(String)"),
        Col("body_sha256", "Nullable(String)"),
    ],
}


def operations(database: str, features: Features) -> list[str]:
    return add_missing_columns(database, features, COLUMNS)
