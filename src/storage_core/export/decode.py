"""Decode the miner's content JSON into the columns of the batch schema, a page at a time.

The fast path (``decode_page``) hands a whole one-source page, as read into Arrow, to Arrow's JSON
reader, which builds the columns without creating a Python object per value (the costly part of a
Python pipeline); the stored columns (uri, datetime, label, size) stay Arrow arrays throughout. msgspec is the
judge of what is valid: the structs below mirror every field of the subnet's ``XContent`` and
``RedditContent``. When Arrow rejects a page (a bad row, a missing required field, or a key no column
holds), msgspec decodes that page row by row: bad rows are skipped, each with its URI and the reason,
and keys no column holds are kept, as a JSON object, in the ``extra`` column (nothing is dropped).
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
from storage_core.schema import JSON_KEYS, SOURCE_IDS, TIMESTAMP, schema_for


class XPost(msgspec.Struct):
    """SN13's ``XContent``: the required fields, then every optional one (absent keys are None)."""

    username: str
    text: str
    url: str
    timestamp: datetime
    tweet_hashtags: list[str] = []
    media: list[str] | None = None
    user_id: str | None = None
    user_display_name: str | None = None
    user_verified: bool | None = None
    tweet_id: str | None = None
    is_reply: bool | None = None
    is_quote: bool | None = None
    conversation_id: str | None = None
    in_reply_to_user_id: str | None = None
    language: str | None = None
    in_reply_to_username: str | None = None
    quoted_tweet_id: str | None = None
    like_count: int | None = None
    retweet_count: int | None = None
    reply_count: int | None = None
    quote_count: int | None = None
    view_count: int | None = None
    bookmark_count: int | None = None
    user_blue_verified: bool | None = None
    user_description: str | None = None
    user_location: str | None = None
    profile_image_url: str | None = None
    cover_picture_url: str | None = None
    user_followers_count: int | None = None
    user_following_count: int | None = None
    scraped_at: datetime | None = None


class RedditPost(
    msgspec.Struct,
    rename={column: key for key, column in JSON_KEYS["reddit"].items() if key != column},
):
    """SN13's ``RedditContent`` as written ``by_alias`` (camelCase keys)."""

    id: str
    url: str
    username: str
    community_name: str
    body: str
    created_at: datetime
    data_type: str
    title: str | None = None
    parent_id: str | None = None
    media: list[str] | None = None
    is_nsfw: bool | None = None
    score: int | None = None
    upvote_ratio: float | None = None
    num_comments: int | None = None
    scraped_at: datetime | None = None


_ROW_DECODERS: dict[str, msgspec.json.Decoder] = {
    "x": msgspec.json.Decoder(XPost),
    "reddit": msgspec.json.Decoder(RedditPost),
}
_OBJECT = msgspec.json.Decoder(dict[str, Any])


@attrs.frozen
class SkippedRow:
    """A row left out of the export because its content does not decode."""

    uri: str
    reason: str


def decode_posts(source: str, contents: Sequence[bytes]) -> tuple[list, list[str | None], list[tuple[int, str]]]:
    """Decode ``contents`` of one source, one row at a time: the posts (None where a row failed), each
    row's keys that no column holds as a JSON object (None when there are none), and ``(index, reason)``
    failures."""
    known = JSON_KEYS[source]
    decoder = _ROW_DECODERS[source]
    posts: list = []
    extras: list[str | None] = []
    failures: list[tuple[int, str]] = []
    for index, content in enumerate(contents):
        try:
            fields = _OBJECT.decode(content)
            unknown = {key: value for key, value in fields.items() if key not in known}
            post = decoder.decode(msgspec.json.encode({k: v for k, v in fields.items() if k in known})
                                  if unknown else content)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
            posts.append(None)
            extras.append(None)
            failures.append((index, f"content is not a valid {source} post: {error}"))
            continue
        posts.append(post)
        extras.append(msgspec.json.encode(unknown).decode() if unknown else None)
    return posts, extras, failures


_REQUIRED = {
    "x": ("username", "text", "url", "timestamp"),
    "reddit": ("id", "url", "username", "community_name", "body", "created_at", "data_type"),
}


def _json_options(source: str) -> pa_json.ParseOptions:
    schema = schema_for(source)
    fields = [pa.field(json_name, schema.field(column).type) for json_name, column in JSON_KEYS[source].items()]
    # "error": a key no column holds sends the page to the row path, which keeps it in ``extra``.
    return pa_json.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="error")


_PARSE_OPTIONS = {source: _json_options(source) for source in JSON_KEYS}
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
    columns = {JSON_KEYS[source][name]: one_array(table.column(name)) for name in table.column_names}
    if any(columns[name].null_count for name in _REQUIRED[source]):
        return None  # a required field is missing: msgspec names the row and the field
    columns["extra"] = pa.nulls(rows, pa.string())  # Arrow vouched for every key: none is left over
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
    posts, extras, failures = decode_posts(source, contents)
    skipped = bad_datetimes + [SkippedRow(rows[index][0], reason) for index, reason in failures]
    keep = [index for index, post in enumerate(posts) if post is not None]
    if not keep:
        return None, skipped
    rows = [rows[index] for index in keep]
    posts = [posts[index] for index in keep]
    built: dict[str, object] = {
        column: _post_column(source, column, [getattr(post, column) for post in posts])
        for column in JSON_KEYS[source].values()
    }
    built["extra"] = optional_strings([extras[index] for index in keep])
    return _table(source, rows, built, encoder), skipped


def _post_column(source: str, column: str, values: list) -> pa.Array:
    """One column built from the posts' values, typed as the schema says (naive datetimes are UTC)."""
    kind = schema_for(source).field(column).type
    if kind == TIMESTAMP:
        values = [None if value is None else value if value.tzinfo else value.replace(tzinfo=UTC)
                  for value in values]
    return pa.array(values, kind)


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


def count_extra(table: pa.Table) -> int:
    """Rows of a decoded table whose post had keys no column holds (kept in ``extra``)."""
    return len(table) - table.column("extra").null_count


def source_name(number: int) -> str | None:
    """The schema's source name for the subnet's DataEntity.source integer, or None when unknown."""
    return SOURCE_IDS.get(number)
