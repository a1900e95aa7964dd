"""The four log tables: every column of the Django model (audit/models.py) plus `seq`,
`chain_hash` and `created_at_us` (created_at to the microsecond).

Weekly partitions; rows sorted by time then sequence number, the explorer's order. `seq`
is in the partition key as well (in blocks of 100 million, so it hardly splits partitions):
that gives every data part a min/max index on seq on every server version, so "is there
anything above the chain head?" and reads of a seq range open only the parts that can hold
it. The column list is frozen here: a later change to a model needs a later migration.
"""

from audit.clickhouse.schema import Col, Features

_TIME = "Delta, ZSTD(1)"  # near-sorted numbers: store the differences
_TEXT = "ZSTD(3)"  # long, repetitive text

_CHAIN = [
    Col("seq", "UInt64", codec=_TIME),
    Col("chain_hash", "String"),
    Col("uid", "String"),
]
_CREATED = [
    Col("created_at", "DateTime('UTC')", codec=_TIME),
    Col("created_at_us", "Int64", codec=_TIME),
]
_ID = "Nullable(Int64)"

COLUMNS = {
    "gateway_log": [
        *_CHAIN,
        Col("request_id", "String"),
        *_CREATED,
        Col("user_id", _ID),
        Col("team_id", _ID),
        Col("api_key_id", _ID),
        Col("api_key_prefix", "String", low_cardinality=True),
        Col("surface", "String", low_cardinality=True),
        Col("ingress", "String", low_cardinality=True),
        Col("model", "String", low_cardinality=True),
        Col("provider_id", _ID),
        Col("provider", "String", low_cardinality=True),
        Col("upstream_model", "String", low_cardinality=True),
        Col("streamed", "UInt8"),
        Col("input_tokens", "Int64"),
        Col("output_tokens", "Int64"),
        Col("cached_tokens", "Int64"),
        Col("reasoning_tokens", "Int64"),
        Col("weighted_tokens", "Int64"),
        Col("cost_usd", "Decimal(20, 10)"),
        Col("latency_ms", "Float64"),
        Col("ttft_ms", "Nullable(Float64)"),
        Col("status_code", "UInt16"),
        Col("error_code", "String", low_cardinality=True),
        Col("error_message", "String", codec=_TEXT),
        Col("client_ip", "Nullable(String)"),
        Col("user_agent", "String", codec=_TEXT),
        Col("disconnected", "UInt8"),
        Col("usage_estimated", "UInt8"),
    ],
    "mcp_log": [
        *_CHAIN,
        Col("request_id", "String"),
        *_CREATED,
        Col("user_id", _ID),
        Col("team_id", _ID),
        Col("api_key_id", _ID),
        Col("api_key_prefix", "String", low_cardinality=True),
        Col("session_id", "String"),
        Col("protocol_version", "String", low_cardinality=True),
        Col("method", "String", low_cardinality=True),
        Col("server_id", _ID),
        Col("server", "String", low_cardinality=True),
        Col("name", "String", low_cardinality=True),
        Col("upstream_name", "String", low_cardinality=True),
        Col("arguments", "Nullable(String)", codec=_TEXT),
        Col("status", "String", low_cardinality=True),
        Col("error_code", "Nullable(Int32)"),
        Col("error_message", "String", codec=_TEXT),
        Col("latency_ms", "Float64"),
        Col("client_ip", "Nullable(String)"),
        Col("user_agent", "String", codec=_TEXT),
    ],
    "admin_log": [
        *_CHAIN,
        *_CREATED,
        Col("action", "String", low_cardinality=True),
        Col("actor_id", _ID),
        Col("actor", "String", low_cardinality=True),
        Col("api_key_prefix", "String", low_cardinality=True),
        Col("object_type", "String", low_cardinality=True),
        Col("object_id", "String"),
        Col("object_repr", "String"),
        Col("before", "Nullable(String)", codec=_TEXT),
        Col("after", "Nullable(String)", codec=_TEXT),
        Col("detail", "String", codec=_TEXT),
        Col("client_ip", "Nullable(String)"),
        Col("user_agent", "String", codec=_TEXT),
        Col("via", "String", low_cardinality=True),
    ],
    "access_log": [
        *_CHAIN,
        *_CREATED,
        Col("port", "String", low_cardinality=True),
        Col("method", "String", low_cardinality=True),
        Col("path", "String", codec=_TEXT),
        Col("status_code", "UInt16"),
        Col("latency_ms", "Float64"),
        Col("client_ip", "Nullable(String)"),
        Col("user_agent", "String", codec=_TEXT),
        Col("user_id", _ID),
        Col("request_id", "String"),
    ],
}

# name: (expression, type) of the data-skipping indexes each table gets where supported.
_INDEXES = {
    "seq_range": ("seq", "minmax", 1),
    "uid_bloom": ("uid", "bloom_filter(0.001)", 4),
}
_REQUEST_INDEX = {"request_bloom": ("request_id", "bloom_filter(0.001)", 4)}
INDEXES = {
    "gateway_log": _INDEXES | _REQUEST_INDEX,
    "mcp_log": _INDEXES | _REQUEST_INDEX,
    "admin_log": _INDEXES,
    "access_log": _INDEXES | _REQUEST_INDEX,
}


def _create(database: str, name: str, features: Features) -> str:
    lines = [column.ddl(features) for column in COLUMNS[name]]
    if features.skip_indexes:
        lines += [
            f"INDEX {index} {expression} TYPE {kind} GRANULARITY {granularity}"
            for index, (expression, kind, granularity) in INDEXES[name].items()
        ]
    body = ",\n    ".join(lines)
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{name} (\n    {body}\n)\n"
        "ENGINE = MergeTree\n"
        "PARTITION BY (toMonday(created_at), intDiv(seq, 100000000))\n"
        "ORDER BY (created_at_us, seq)"
    )


def operations(database: str, features: Features) -> list[str]:
    return [_create(database, name, features) for name in COLUMNS]
