"""Decode the miner's content JSON into the columns of the batch schema, a page at a time.

The fast path (``decode_page``) hands a whole one-source page, as read into Arrow, to Arrow's JSON
reader, which builds the columns without creating a Python object per value (the costly part of a
Python pipeline); the stored columns (uri, datetime, label, size) stay Arrow arrays throughout. msgspec is the
judge of what is valid: the structs below mirror the subnet's ``XContent`` and ``RedditContent``
(unknown fields ignored). When Arrow rejects a page, or a required field is missing, msgspec decodes
that page row by row so that only the bad rows are skipped, each with its URI and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from storage_core.export.arrow_values import (
    binary_scalar,
    int64s,
    one_array,
    optional_strings,
    strings,
    text_scalar,
)
from storage_core.export.encoding import FieldEncoder
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
#: One thread: the export already runs the SQLite reader and the chunk writer beside the parser.
_MIN_BLOCK_BYTES = 1 << 20


def _arrow_columns(source: str, contents: Sequence[bytes]) -> dict[str, pa.Array] | None:
    """The page's post columns parsed by Arrow, or None when Arrow cannot vouch for every row."""
    try:
        data = b"\n".join(contents)
    except TypeError:
        return None  # content stored as text, not a blob: msgspec takes both
    if not all(content[:1] == b"{" and content.rstrip(b"\n")[-1:] == b"}" for content in contents):
        return None  # see _one_object_each
    return _parse_lines(source, pa.py_buffer(data), len(contents))


def _parse_lines(source: str, data: pa.Buffer, rows: int) -> dict[str, pa.Array] | None:
    """Parse ``rows`` newline-separated posts; None unless every row is one valid line."""
    try:
        # One block for the whole page: each column comes out as one array, with no copy to join blocks.
        options = pa_json.ReadOptions(use_threads=False, block_size=max(_MIN_BLOCK_BYTES, data.size + 1))
        table = pa_json.read_json(pa.BufferReader(data), read_options=options, parse_options=_PARSE_OPTIONS[source])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != rows:
        return None  # a row spans several lines (pretty-printed) or none: msgspec sorts it out
    columns = {_JSON_COLUMNS[source][name]: one_array(table.column(name)) for name in table.column_names}
    if any(columns[name].null_count for name in _REQUIRED[source]):
        return None  # a required field is missing: msgspec names the row and the field
    return columns


def _timestamps(texts: list[str]) -> pa.Array:
    """Parse the database's datetime text in Arrow (fast); fall back to Python for naive or odd values."""
    try:
        return strings(texts).cast(TIMESTAMP)
    except pa.ArrowInvalid:
        return pa.array([parse_datetime(text) for text in texts], TIMESTAMP)


def parse_datetime(text: object) -> datetime | None:
    """The stored datetime as an aware datetime (naive ones are UTC, as the subnet means); None if it is not one."""
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


#: One stored row as a tuple, in ``sqlite_source.PAGE_COLUMNS`` order (the slow path's unit):
#: ``(uri, datetime text, source, label, content bytes, contentSizeBytes, timeBucketId)``.
SourceRow = tuple


def decode_page(
    source: str, page: pa.Table, encoder: FieldEncoder | None = None
) -> tuple[pa.Table | None, list[SkippedRow]]:
    """The chunk-schema table of a page read into Arrow (all rows of one ``source``), and the skipped rows.

    Fast path: the contents joined by newlines go to Arrow's JSON reader in one call. Anything it
    cannot vouch for (a bad row, a missing field, a naive datetime) goes row by row through
    ``rows_to_table``, which names every skipped row.
    """
    # Each content ends with a newline (see sqlite_source.PAGE_COLUMNS): the values buffer is JSON lines.
    content = one_array(page.column("content"))
    _validity, offsets, lines = content.buffers()
    columns = None
    if page.num_rows and lines is not None and _one_object_each(content):
        positions = memoryview(offsets).cast("i")
        start, end = positions[content.offset], positions[content.offset + len(content)]
        columns = _parse_lines(source, lines.slice(start, end - start), page.num_rows)
    if columns is not None:
        datetimes = _arrow_timestamps(one_array(page.column("datetime")))
        if datetimes is not None:
            label = one_array(page.column("label"))
            # The columns kept from the page are copied: the rows waiting to be written then own their
            # buffers, which is what the partitioner counts (the content is used here and let go).
            stored = {
                "uri": page.column("uri").combine_chunks(),
                "datetime": datetimes,
                "source": pa.repeat(strings([source])[0], page.num_rows),
                "label": pc.if_else(pc.equal(label, _NULL_LABEL), pa.nulls(page.num_rows, pa.string()), label),
                "content_size_bytes": page.column("content_size_bytes").combine_chunks(),
            }
            return _with_encoding(source, {**stored, **columns}, encoder), []
    rows = list(zip(*(page.column(name).to_pylist() for name in page.column_names)))
    return rows_to_table(source, rows, encoder)


_NULL_LABEL = text_scalar("NULL")
_OPEN = binary_scalar(b"{")
_CLOSE = binary_scalar(b"}")


def _one_object_each(content: pa.Array) -> bool:
    """Whether every content starts with "{" and ends with "}" (before its newline).

    Arrow's reader counts values, not lines: a row holding two posts next to an empty row would still
    give one value per row, each the wrong row's. A row that starts with "{" starts a new object (it
    cannot continue the previous row's, which ended with "}": JSON allows no "{" there), so with this
    check and equal counts every row is exactly one object; anything else takes the row-by-row path.
    """
    first = pc.binary_slice(content, 0, 1)
    last = pc.binary_slice(content, -2, -1)
    return bool(pc.all(pc.and_(pc.equal(first, _OPEN), pc.equal(last, _CLOSE))).as_py())


def _arrow_timestamps(texts: pa.Array) -> pa.Array | None:
    try:
        return texts.cast(TIMESTAMP)
    except pa.ArrowInvalid:
        return None  # naive or odd values: the row path parses them in Python


def rows_to_table(
    source: str, rows: Sequence[SourceRow], encoder: FieldEncoder | None = None
) -> tuple[pa.Table | None, list[SkippedRow]]:
    """The chunk-schema table of ``rows`` (all of one source) and the rows that were skipped."""
    bad_datetimes = [SkippedRow(row[0], f"datetime {row[1]!r} is not an ISO 8601 datetime")
                     for row in rows if parse_datetime(row[1]) is None]
    if bad_datetimes:
        bad = {skip.uri for skip in bad_datetimes}
        rows = [row for row in rows if row[0] not in bad]
        if not rows:
            return None, bad_datetimes
    contents = [row[4] for row in rows]
    columns = _arrow_columns(source, contents)
    if columns is not None:
        return _table(source, rows, columns, encoder), bad_datetimes
    posts, failures = decode_posts(source, contents)
    skipped = bad_datetimes + [SkippedRow(rows[index][0], reason) for index, reason in failures]
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
        "uri": strings([row[0] for row in rows]),
        "datetime": _timestamps([row[1] for row in rows]),
        "source": strings([source] * len(rows)),
        "label": optional_strings([None if row[3] == "NULL" else row[3] for row in rows]),
        "content_size_bytes": int64s([row[5] for row in rows]),
        **posts,
    }
    return _with_encoding(source, columns, encoder)


def _with_encoding(source: str, columns: dict[str, object], encoder: FieldEncoder | None) -> pa.Table:
    """The table of ``columns`` in schema order, with the encoder's fields encrypted."""
    if encoder is not None:
        for name in encoder.fields:
            values: Any = columns[name]
            if isinstance(values, pa.Array):
                columns[name] = encoder.encode_array(name, values)
            else:
                columns[name] = optional_strings(encoder.encode_column(name, values))
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
