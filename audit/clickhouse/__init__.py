"""ClickHouse as the store of log records at scale (CLICKHOUSE_URL; docs/audit.md).

client.py is the one way in (a connection per thread, the database created on first use);
schema.py says which server features a table gets and how a record becomes a row and back;
migrations/ holds the numbered schema changes `manage.py clickhouse_migrate` applies;
store.py is the `audit.store.Store`; mirror.py copies the admin audit trail, which is
written to SQL first; explorer.py and usage.py answer the console's queries.
"""
