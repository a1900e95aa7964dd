"""Captured bodies (audit/bodies.py): the columns GatewayLog and McpLog gained.

18.16 has no `ADD COLUMN IF NOT EXISTS`: columns already there (a run interrupted after
some of its statements) are left out when the statements are rendered, so a second run
does the rest."""

from audit.clickhouse import client
from audit.clickhouse.schema import Col, Features

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
    statements = []
    for table, columns in COLUMNS.items():
        present = {
            name
            for (name,) in client.execute(
                "SELECT name FROM system.columns WHERE database = %(database)s "
                "AND table = %(table)s",
                {"database": database, "table": table},
            )
        }
        statements += [
            f"ALTER TABLE {database}.{table} ADD COLUMN {column.ddl(features)}"
            for column in columns
            if column.name not in present
        ]
    return statements
