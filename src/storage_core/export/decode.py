"""Decode the miner's content JSON into the columns of the batch schema, a page at a time.

The fast path hands a whole page to Arrow's multi-threaded JSON reader, which builds the columns
without creating a Python object per value (the costly part of a Python pipeline). msgspec is the
judge of what is valid: the structs below mirror the subnet's ``XContent`` and ``RedditContent``
(unknown fields ignored). When Arrow rejects a page, or a required field is missing, msgspec decodes
that page row by row so that only the bad rows are skipped, each with its URI and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import io
from array import array

import attrs
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from storage_core.export.encoding import FieldEncoder
from storage_core.export.sqlite_source import SourceRow
from storage_core.schema import SOURCE_IDS, TIMESTAMP, schema_for


class XPost(msgspec.Struct):
    username: str
    text: str
    url: str
    timestamp: datetime
    tweet_hashtags: list[str] = []


class RedditPost(
    msgspec.Struct,
    rename={
        "community_name": "communityName",
        "created_at": "createdAt",
        "data_type": "dataType",
        "parent_id": "parentId",
    },
):
    id: str
    url: str
    username: str
    community_name: str
    body: str
    created_at: datetime
    data_type: str
    title: str | None = None
    parent_id: str | None = None


_PAGE_DECODERS: dict[str, msgspec.json.Decoder] = {
    "x": msgspec.json.Decoder(list[XPost]),
    "reddit": msgspec.json.Decoder(list[RedditPost]),
}
_ROW_DECODERS: dict[str, msgspec.json.Decoder] = {
    "x": msgspec.json.Decoder(XPost),
    "reddit": msgspec.json.Decoder(RedditPost),
}


@attrs.frozen
class SkippedRow:
    """A row left out of the export because its content does not decode."""

    uri: str
    reason: str


def decode_posts(source: str, contents: Sequence[bytes]) -> tuple[list, list[tuple[int, str]]]:
    """Decode ``contents`` of one source: the posts (None where a row failed) and ``(index, reason)`` failures."""
    try:
        posts = _PAGE_DECODERS[source].decode(b"[" + b",".join(contents) + b"]")
        if len(posts) == len(contents):
            return posts, []
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    decoder = _ROW_DECODERS[source]
    posts, failures = [], []
    for index, content in enumerate(contents):
        try:
            posts.append(decoder.decode(content))
        except (msgspec.DecodeError, UnicodeDecodeError) as error:
            posts.append(None)
            failures.append((index, f"content is not a valid {source} post: {error}"))
    return posts, failures


#: JSON field name -> schema column, per source; the JSON schema handed to Arrow's reader.
_JSON_COLUMNS = {
    "x": {"username": "username", "text": "text", "url": "url", "timestamp": "timestamp",
          "tweet_hashtags": "tweet_hashtags"},
    "reddit": {"id": "id", "url": "url", "username": "username", "communityName": "community_name",
               "body": "body", "title": "title", "createdAt": "created_at", "dataType": "data_type",
               "parentId": "parent_id"},
}
_REQUIRED = {
    "x": ("username", "text", "url", "timestamp"),
    "reddit": ("id", "url", "username", "community_name", "body", "created_at", "data_type"),
}


def _json_options(source: str) -> pa_json.ParseOptions:
    schema = schema_for(source)
    fields = [pa.field(json_name, schema.field(column).type) for json_name, column in _JSON_COLUMNS[source].items()]
    return pa_json.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")


_PARSE_OPTIONS = {source: _json_options(source) for source in _JSON_COLUMNS}
# One thread: the export already runs the SQLite reader beside the parser, on a 2-core class of machine.
_READ_OPTIONS = pa_json.ReadOptions(use_threads=False, block_size=1 << 22)


def _arrow_columns(source: str, contents: Sequence[bytes]) -> dict[str, pa.Array] | None:
    """The page's post columns parsed by Arrow, or None when Arrow cannot vouch for every row."""
    try:
        data = b"\n".join(contents)
    except TypeError:
        return None  # content stored as text, not a blob: msgspec takes both
    try:
        table = pa_json.read_json(io.BytesIO(data), read_options=_READ_OPTIONS, parse_options=_PARSE_OPTIONS[source])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(contents):
        return None  # a row spans several lines (pretty-printed) or none: msgspec sorts it out
    columns = {_JSON_COLUMNS[source][name]: table.column(name).combine_chunks() for name in table.column_names}
    if any(columns[name].null_count for name in _REQUIRED[source]):
        return None  # a required field is missing: msgspec names the row and the field
    return columns


def _strings(values: Sequence[str]) -> pa.Array:
    """A string array built in Arrow from one joined buffer.

    ``pa.array(list)`` makes pyarrow import pandas when it is installed (~50 MB of resident memory,
    a fifth of the export's budget); splitting one buffer does not, and is as fast.
    """
    if not values:
        return pa.array([], pa.string())
    data = "\n".join(values).encode()
    if data.count(b"\n") != len(values) - 1:  # a value holds a newline: take the slow, general path
        return pa.array(values, pa.string())
    one = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(array("i", [0, len(data)])), pa.py_buffer(data)])
    return pc.split_pattern(one, "\n").flatten()


def _optional_strings(values: Sequence[str | None]) -> pa.Array:
    """Like ``_strings``, with None as null."""
    base = _strings([value or "" for value in values])
    if None not in values:
        return base
    bits = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if value is not None:
            bits[index >> 3] |= 1 << (index & 7)
    validity = pa.py_buffer(bytes(bits))
    return pa.Array.from_buffers(pa.string(), len(values), [validity, *base.buffers()[1:]], offset=base.offset)


def _int64s(values: Sequence[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array("q", values))])


def _timestamps(texts: list[str]) -> pa.Array:
    """Parse the database's datetime text in Arrow (fast); fall back to Python for naive or odd values."""
    try:
        return _strings(texts).cast(TIMESTAMP)
    except pa.ArrowInvalid:
        values = []
        for text in texts:
            value = datetime.fromisoformat(text)
            values.append(value if value.tzinfo else value.replace(tzinfo=UTC))
        return pa.array(values, TIMESTAMP)


def rows_to_table(
    source: str, rows: Sequence[SourceRow], encoder: FieldEncoder | None = None
) -> tuple[pa.Table | None, list[SkippedRow]]:
    """The chunk-schema table of ``rows`` (all of one source) and the rows that were skipped."""
    contents = [row[4] for row in rows]
    columns = _arrow_columns(source, contents)
    if columns is not None:
        return _table(source, rows, columns, encoder), []
    posts, failures = decode_posts(source, contents)
    skipped = [SkippedRow(rows[index][0], reason) for index, reason in failures]
    if failures:
        keep = [index for index, post in enumerate(posts) if post is not None]
        rows = [rows[index] for index in keep]
        posts = [posts[index] for index in keep]
    if not rows:
        return None, skipped
    # The good rows may pass Arrow's fast path as they are, or once msgspec has re-encoded them
    # (compact, datetimes in RFC 3339 with a zone); otherwise build the columns from the structs.
    for contents in ([row[4] for row in rows], [_reencode(post) for post in posts]):
        columns = _arrow_columns(source, contents)
        if columns is not None:
            return _table(source, rows, columns, encoder), skipped
    columns = {}
    if source == "x":
        columns.update(
            username=[post.username for post in posts],
            text=[post.text for post in posts],
            url=[post.url for post in posts],
            timestamp=pa.array([post.timestamp for post in posts], TIMESTAMP),
            tweet_hashtags=[post.tweet_hashtags for post in posts],
        )
    else:
        columns.update(
            id=[post.id for post in posts],
            url=[post.url for post in posts],
            username=[post.username for post in posts],
            community_name=[post.community_name for post in posts],
            body=[post.body for post in posts],
            title=[post.title for post in posts],
            created_at=pa.array([post.created_at for post in posts], TIMESTAMP),
            data_type=[post.data_type for post in posts],
            parent_id=[post.parent_id for post in posts],
        )
    return _table(source, rows, columns, encoder), skipped


def _table(source: str, rows: Sequence[SourceRow], posts: dict, encoder: FieldEncoder | None) -> pa.Table:
    """Join the stored columns (uri, datetime, label, size) with the decoded post columns."""
    columns: dict[str, object] = {
        "uri": _strings([row[0] for row in rows]),
        "datetime": _timestamps([row[1] for row in rows]),
        "source": _strings([source] * len(rows)),
        "label": _optional_strings([None if row[3] == "NULL" else row[3] for row in rows]),
        "content_size_bytes": _int64s([row[5] for row in rows]),
        **posts,
    }
    if encoder is not None:
        for name in encoder.fields:
            values: Any = columns[name]
            if isinstance(values, pa.Array):
                values = values.to_pylist()
            columns[name] = _optional_strings(encoder.encode_column(name, values))
    schema = schema_for(source)
    arrays = [columns[field.name] for field in schema]
    if all(isinstance(column, pa.Array) for column in arrays):
        return pa.Table.from_arrays(arrays, schema=schema)
    return pa.Table.from_pydict(columns, schema=schema)  # the rare fallback with Python lists


def _reencode(post: msgspec.Struct) -> bytes:
    """A valid post as compact JSON with zone-aware datetimes (naive ones are UTC, as the subnet means)."""
    changes = {
        name: getattr(post, name).replace(tzinfo=UTC)
        for name in ("timestamp", "created_at")
        if hasattr(post, name) and getattr(post, name).tzinfo is None
    }
    return msgspec.json.encode(msgspec.structs.replace(post, **changes) if changes else post)


def source_name(number: int) -> str | None:
    """The schema's source name for the subnet's DataEntity.source integer, or None when unknown."""
    return SOURCE_IDS.get(number)
