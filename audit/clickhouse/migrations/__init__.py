"""Numbered ClickHouse schema migrations, `NNNN_name.py`, applied in order by
`manage.py clickhouse_migrate` (audit/clickhouse/migrate.py).

Each module has `operations(database, features) -> list[str]`: statements rendered for the
server's version. Every statement must be safe to run twice (IF NOT EXISTS, IF EXISTS), so
that a migration interrupted half-way is simply applied again.
"""
