"""A round manifest: the signed, chained list of every chunk a miner holds on one backend.

The object, as stored (one per round and backend, under :func:`storage_core.layout.manifest_key`)::

    b"SCM2" | u32 little-endian header length | header (canonical JSON) | chunk table | URI index section

The header is ``{"manifest": body, "signature": hex}``; the signature is the miner's hotkey's sr25519
signature over the canonical JSON of ``body`` (sorted keys, no spaces). ``body`` names the hotkey and
backend, the round number ``seq`` and the sha256 of the previous round's manifest object
(``previous``), so a rewritten history shows as a broken chain. It holds no chunk itself, only what
lets a reader fetch and check one entry at a time: per chunk, the length and digest of its entry in
the chunk table and the first bytes of its sha256 (a 20-byte record); and the URI index's layout, one
entry count and one digest per bucket (:mod:`storage_core.manifest.uri_index`). A check of a few
claims so reads a header of a few bytes per chunk, the entries of the chunks it opens and one index
bucket per claim, however many chunks the miner holds; the audit reads the whole table once.

A manifest is written by the miner and believed by nobody until :func:`decode_manifest` has checked
the header (caps first, so a manifest cannot cost a validator more than ``ManifestLimits``, then
structure, then the signature) and :meth:`ManifestHeader.entry` each entry it reads. Every refusal is a
``ManifestError`` whose message says why.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import attrs
import numpy as np

from storage_core.chain.keys import hotkey_address
from storage_core.chain.sdk import signing_keypair, verify_signature
from storage_core.layout import object_key
from storage_core.manifest.uri_index import DIGEST_BYTES, MAX_CHUNKS, TARGET_BUCKET_ENTRIES, IndexLayout
from storage_core.manifest.uri_hashes import decode_sample

FORMAT = "storage-core-manifest/2"
MAGIC = b"SCM2"
PREFIX_BYTES = 8
#: One chunk in the signed header: its entry's length and digest in the chunk table, and the first bytes
#: of its sha256 (enough to tell whether a listed object is in the manifest without reading its entry).
TABLE_RECORD = np.dtype([("length", "<u4"), ("digest", "<u8"), ("sha", "<u8")])
SHA_PREFIX_BYTES = 8


class ManifestError(Exception):
    """A manifest that cannot be believed: its miner's claims on that backend are invalid."""


@attrs.frozen
class ManifestLimits:
    """What one manifest may cost a validator; past any of these it is refused."""

    max_header_bytes: int = 8 * 1024 * 1024
    max_table_bytes: int = 64 * 1024 * 1024
    max_entry_bytes: int = 64 * 1024
    max_section_bytes: int = 64 * 1024 * 1024
    max_chunks: int = MAX_CHUNKS
    #: Entries in one bucket of the URI index: honest buckets hold ~256 (a few dozen more by chance).
    max_bucket_entries: int = 4 * TARGET_BUCKET_ENTRIES + 64
    #: The caps of one chunk (as ``storage_core.verify.footer.Limits``): an entry beyond them is a lie.
    max_chunk_bytes: int = 256 * 1024 * 1024
    max_chunk_rows: int = 262_144
    max_footer_bytes: int = 1024 * 1024

    @property
    def max_object_bytes(self) -> int:
        return PREFIX_BYTES + self.max_header_bytes + self.max_table_bytes + self.max_section_bytes


@attrs.frozen
class ChunkEntry:
    """One chunk as the manifest describes it. ``round`` is the manifest ``seq`` that first listed it."""

    sha256: str
    size: int
    rows: int
    source: str
    date: str
    uri_min: str
    uri_max: str
    round: int
    sample: str  # base64 uint64 words: storage_core.manifest.uri_hashes.encode_sample
    footer: int  # bytes of the parquet footer: a check reads exactly that much from the chunk's end

    def key(self, hotkey: str) -> str:
        return object_key(hotkey, self.source, self.date, self.sha256)

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def encoded(self) -> bytes:
        """The entry as stored in the chunk table."""
        return canonical(self.as_json())


@attrs.frozen
class RoundFields:
    """What every manifest says of itself: whose, for which backend, which round, chained to which."""

    hotkey: str
    backend: str
    seq: int
    previous: str | None
    round_time: str
    schema_version: int

    def round_fields(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in attrs.fields(RoundFields)}


@attrs.frozen
class Manifest(RoundFields):
    """A whole manifest: what the uploader builds, and what the audit reads (every entry checked)."""

    chunks: tuple[ChunkEntry, ...]
    index: IndexLayout
    digests: bytes  # DIGEST_BYTES per bucket of the index, in bucket order

    def by_key(self) -> dict[str, ChunkEntry]:
        return {entry.key(self.hotkey): entry for entry in self.chunks}


@attrs.frozen
class ManifestHeader(RoundFields):
    """A checked header: everything but the entries, which :meth:`entry` reads and checks one at a time."""

    rows: int
    table: np.ndarray = attrs.field(eq=False, repr=False)  # TABLE_RECORD per chunk, in manifest order
    index: IndexLayout
    digests: bytes

    @property
    def chunk_count(self) -> int:
        return len(self.table)

    @cached_property
    def starts(self) -> tuple[int, ...]:
        """Byte offset of each entry in the chunk table."""
        ends = np.cumsum(self.table["length"].astype(np.int64))
        return tuple(int(x) for x in np.concatenate([[0], ends[:-1]])) if len(ends) else ()

    @property
    def table_bytes(self) -> int:
        return int(self.table["length"].astype(np.int64).sum())

    def span(self, position: int) -> tuple[int, int]:
        start = self.starts[position]
        return start, start + int(self.table["length"][position])

    @cached_property
    def positions(self) -> dict[int, int]:
        """First bytes of a chunk's sha256 (as :func:`sha_prefix`) -> its position (unique: checked when decoded)."""
        return {sha: position for position, sha in enumerate(self.table["sha"].tolist())}

    def position_of(self, sha256_hex: str) -> int | None:
        """Where the chunk whose sha256 starts with ``sha256_hex`` is listed, if it is."""
        return self.positions.get(sha_prefix(sha256_hex))

    def entry(self, position: int, data: bytes, limits: ManifestLimits = ManifestLimits()) -> ChunkEntry:
        """Entry ``position`` from its bytes in the chunk table, held to its record in the signed header."""
        record = self.table[position]
        _need(len(data) == int(record["length"]) and _entry_digest(data) == int(record["digest"]),
              f"chunks[{position}] does not match its digest in the signed header")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ManifestError(f"chunks[{position}] is not JSON: {error}") from None
        entry = _entry(raw, position, limits)
        _need(sha_prefix(entry.sha256) == int(record["sha"]),
              f"chunks[{position}] is not the chunk its header record names")
        _need(entry.round <= self.seq, f"chunk {entry.sha256} claims round {entry.round}, after {self.seq}")
        try:
            decode_sample(entry.sample)
        except ValueError as error:
            raise ManifestError(f"chunk {entry.sha256}: sample is not base64 words ({error})") from None
        return entry

    def entries(self, table: bytes, limits: ManifestLimits = ManifestLimits()) -> Manifest:
        """The whole manifest from its whole chunk table (the audit's read): every entry checked."""
        _need(len(table) == self.table_bytes, f"chunk table of {len(table)} bytes; the header says {self.table_bytes}")
        chunks = tuple(self.entry(i, table[slice(*self.span(i))], limits) for i in range(self.chunk_count))
        rows = sum(entry.rows for entry in chunks)
        _need(rows == self.rows, f"the chunks hold {rows} rows; the header says {self.rows}")
        return Manifest(**self.round_fields(), chunks=chunks, index=self.index, digests=self.digests)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _entry_digest(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


def sha_prefix(sha256_hex: str) -> int:
    """The first ``SHA_PREFIX_BYTES`` of a hex sha256 (or of a key's name hash), as the header records them."""
    return int.from_bytes(bytes.fromhex(sha256_hex[:2 * SHA_PREFIX_BYTES]), "little")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_manifest(manifest: Manifest, section: bytes, signer: Any) -> bytes:
    """The object bytes of ``manifest``, signed by ``signer`` (a Wallet or Keypair of ``manifest.hotkey``)."""
    if hotkey_address(signer) != manifest.hotkey:
        raise ValueError(f"the signer is {hotkey_address(signer)}, not the manifest's hotkey {manifest.hotkey}")
    encoded = [entry.encoded() for entry in manifest.chunks]
    table = np.empty(len(encoded), dtype=TABLE_RECORD)
    table["length"] = [len(data) for data in encoded]
    table["digest"] = [_entry_digest(data) for data in encoded]
    table["sha"] = [sha_prefix(entry.sha256) if _HEX64.fullmatch(entry.sha256) else 0 for entry in manifest.chunks]
    body = {
        "format": FORMAT, "hotkey": manifest.hotkey, "backend": manifest.backend, "seq": manifest.seq,
        "previous": manifest.previous, "round_time": manifest.round_time, "schema_version": manifest.schema_version,
        "rows": sum(entry.rows for entry in manifest.chunks),
        "chunks": {"count": len(encoded), "table": _b64(table.tobytes())},
        "index": {"counts": _b64(np.asarray(manifest.index.counts, dtype="<u2").tobytes()),
                  "digests": _b64(manifest.digests)},
    }
    signature = signing_keypair(signer).sign(canonical(body)).hex()
    header = canonical({"manifest": body, "signature": signature})
    return MAGIC + len(header).to_bytes(4, "little") + header + b"".join(encoded) + section


def header_length(prefix: bytes, limits: ManifestLimits = ManifestLimits()) -> int:
    """The header length announced by an object's first ``PREFIX_BYTES``; ManifestError when implausible."""
    if len(prefix) < PREFIX_BYTES or prefix[:4] != MAGIC:
        raise ManifestError("not a storage-core manifest (no SCM2 magic)")
    length = int.from_bytes(prefix[4:8], "little")
    if not 2 <= length <= limits.max_header_bytes:
        raise ManifestError(f"header of {length} bytes (allowed: 2 to {limits.max_header_bytes})")
    return length


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _need(condition: bool, why: str) -> None:
    if not condition:
        raise ManifestError(why)


def _int(value: Any, name: str, low: int = 0) -> int:
    _need(type(value) is int and value >= low, f"{name} must be an integer >= {low}")
    return int(value)


def _str(value: Any, name: str) -> str:
    _need(isinstance(value, str), f"{name} must be text")
    return str(value)


def _bytes(value: Any, name: str) -> bytes:
    try:
        return base64.b64decode(_str(value, name), validate=True)
    except ValueError as error:  # binascii.Error
        raise ManifestError(f"{name} is not base64 ({error})") from None


def _entry(raw: Any, index: int, limits: ManifestLimits) -> ChunkEntry:
    name = f"chunks[{index}]"
    _need(isinstance(raw, Mapping) and set(raw) == set(attrs.fields_dict(ChunkEntry)),
          f"{name} must hold exactly {', '.join(sorted(attrs.fields_dict(ChunkEntry)))}")
    entry = ChunkEntry(
        sha256=_str(raw["sha256"], f"{name}.sha256"), size=_int(raw["size"], f"{name}.size", 1),
        rows=_int(raw["rows"], f"{name}.rows", 1), source=_str(raw["source"], f"{name}.source"),
        date=_str(raw["date"], f"{name}.date"), uri_min=_str(raw["uri_min"], f"{name}.uri_min"),
        uri_max=_str(raw["uri_max"], f"{name}.uri_max"), round=_int(raw["round"], f"{name}.round"),
        sample=_str(raw["sample"], f"{name}.sample"), footer=_int(raw["footer"], f"{name}.footer", 1),
    )
    _need(bool(_HEX64.fullmatch(entry.sha256)), f"{name}.sha256 is not 64 lower-case hex characters")
    _need(entry.size <= limits.max_chunk_bytes,
          f"{name} claims {entry.size} bytes, beyond the {limits.max_chunk_bytes}-byte cap of a chunk")
    _need(entry.rows <= limits.max_chunk_rows,
          f"{name} claims {entry.rows} rows, beyond the {limits.max_chunk_rows}-row cap of a chunk")
    _need(entry.uri_min <= entry.uri_max, f"{name}: uri_min is after uri_max")
    _need(entry.footer < entry.size and entry.footer <= limits.max_footer_bytes,
          f"{name} claims a {entry.footer}-byte footer (allowed: under its size and {limits.max_footer_bytes})")
    try:
        entry.key("5" + "1" * 47)  # partition values as the layout allows them
    except ValueError as error:
        raise ManifestError(f"{name}: {error}") from None
    return entry


def decode_manifest(header: bytes, hotkey: str, limits: ManifestLimits = ManifestLimits()) -> ManifestHeader:
    """Parse and check a manifest header written for ``hotkey``; ManifestError says why it is refused."""
    try:
        document = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ManifestError(f"header is not JSON: {error}") from None
    _need(isinstance(document, dict) and set(document) == {"manifest", "signature"},
          "header must hold exactly 'manifest' and 'signature'")
    body, signature = document["manifest"], document["signature"]
    _need(isinstance(body, dict), "'manifest' must be an object")
    _need(body.get("format") == FORMAT, f"format is {body.get('format')!r}, not {FORMAT}")
    _need(body.get("hotkey") == hotkey, f"manifest names hotkey {body.get('hotkey')!r}, not {hotkey}")
    try:
        valid = isinstance(signature, str) and verify_signature(canonical(body), bytes.fromhex(signature), hotkey)
    except (ValueError, TypeError):
        valid = False
    _need(valid, f"signature is not {hotkey}'s signature of the manifest")
    expected = {"format", "hotkey", "backend", "seq", "previous", "round_time", "schema_version", "rows", "chunks",
                "index"}
    _need(set(body) == expected, f"manifest must hold exactly {', '.join(sorted(expected))}")
    previous = body["previous"]
    _need(previous is None or (isinstance(previous, str) and bool(_HEX64.fullmatch(previous))),
          "previous must be null or a sha256")
    seq, rows = _int(body["seq"], "seq"), _int(body["rows"], "rows")
    table = _table(body["chunks"], limits)
    raw_index = body["index"]
    _need(isinstance(raw_index, dict) and set(raw_index) == {"counts", "digests"},
          "index must hold exactly counts and digests")
    counts_bytes, digests = _bytes(raw_index["counts"], "index.counts"), _bytes(raw_index["digests"], "index.digests")
    _need(len(counts_bytes) % 2 == 0, "index.counts is not whole 16-bit counts")
    counts = np.frombuffer(counts_bytes, dtype="<u2")
    _need(len(counts) >= 1 and len(digests) == DIGEST_BYTES * len(counts), "index needs one count and one digest a bucket")
    _need(int(counts.max()) <= limits.max_bucket_entries,
          f"an index bucket holds {int(counts.max())} entries (allowed: {limits.max_bucket_entries})")
    layout = IndexLayout(tuple(int(c) for c in counts))
    _need(layout.section_bytes <= limits.max_section_bytes,
          f"index section of {layout.section_bytes} bytes, over the cap of {limits.max_section_bytes}")
    _need(rows <= len(table) * limits.max_chunk_rows,
          f"{rows} rows in {len(table)} chunks: beyond the {limits.max_chunk_rows}-row cap of a chunk")
    _need(sum(layout.counts) == rows, f"the index holds {sum(layout.counts)} entries for {rows} rows")
    return ManifestHeader(
        hotkey=hotkey, backend=_str(body["backend"], "backend"), seq=seq, previous=previous,
        round_time=_str(body["round_time"], "round_time"), schema_version=_int(body["schema_version"], "schema_version"),
        rows=rows, table=table, index=layout, digests=digests,
    )


def _table(raw: Any, limits: ManifestLimits) -> np.ndarray:
    """The header's chunk records, within the caps and naming no chunk twice."""
    _need(isinstance(raw, dict) and set(raw) == {"count", "table"}, "chunks must hold exactly count and table")
    count = _int(raw["count"], "chunks.count")
    _need(count <= limits.max_chunks, f"{count} chunks, over the cap of {limits.max_chunks}")
    data = _bytes(raw["table"], "chunks.table")
    _need(len(data) == count * TABLE_RECORD.itemsize, f"chunks.table holds {len(data)} bytes for {count} chunks")
    table = np.frombuffer(data, dtype=TABLE_RECORD)
    lengths = table["length"].astype(np.int64)
    if count:
        _need(int(lengths.min()) >= 2 and int(lengths.max()) <= limits.max_entry_bytes,
              f"a chunk entry of {int(lengths.min())} to {int(lengths.max())} bytes "
              f"(allowed: 2 to {limits.max_entry_bytes})")
    _need(int(lengths.sum()) <= limits.max_table_bytes,
          f"chunk table of {int(lengths.sum())} bytes, over the cap of {limits.max_table_bytes}")
    shas = table["sha"].tolist()
    if len(set(shas)) != count:
        twice = Counter(shas).most_common(1)[0][0]
        raise ManifestError(f"chunk {twice.to_bytes(SHA_PREFIX_BYTES, 'little').hex()}… is listed twice")
    return table
