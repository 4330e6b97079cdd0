"""A round manifest: the signed, chained list of every chunk a miner holds on one backend.

The object, as stored (one per round and backend, under :func:`storage_core.layout.manifest_key`)::

    b"SCM1" | u32 little-endian header length | header (canonical JSON) | URI index section

The header is ``{"manifest": body, "signature": hex}``; the signature is the miner's hotkey's sr25519
signature over the canonical JSON of ``body`` (sorted keys, no spaces). ``body`` names the hotkey and
backend, the round number ``seq`` and the sha256 of the previous round's manifest object
(``previous``), so a rewritten history shows as a broken chain; it lists the chunks (``ChunkEntry``) and
the URI index's layout: one entry count and one digest per bucket (:mod:`storage_core.manifest.uri_index`).

A manifest is written by the miner and believed by nobody until :func:`decode_manifest` has checked
it: caps first (a manifest cannot cost a validator more than ``ManifestLimits``), then structure, then
the signature. Every refusal is a ``ManifestError`` whose message says why.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from storage_core.chain.keys import hotkey_address
from storage_core.chain.sdk import signing_keypair, verify_signature
from storage_core.layout import object_key
from storage_core.manifest.uri_index import DIGEST_BYTES, MAX_CHUNKS, TARGET_BUCKET_ENTRIES, IndexLayout
from storage_core.manifest.uri_hashes import decode_sample

FORMAT = "storage-core-manifest/1"
MAGIC = b"SCM1"
PREFIX_BYTES = 8


class ManifestError(Exception):
    """A manifest that cannot be believed: its miner's claims on that backend are invalid."""


@attrs.frozen
class ManifestLimits:
    """What one manifest may cost a validator; past any of these it is refused."""

    max_header_bytes: int = 8 * 1024 * 1024
    max_section_bytes: int = 64 * 1024 * 1024
    max_chunks: int = MAX_CHUNKS
    #: Entries in one bucket of the URI index: honest buckets hold ~256 (a few dozen more by chance).
    max_bucket_entries: int = 4 * TARGET_BUCKET_ENTRIES + 64
    #: The caps of one chunk (as ``storage_core.verify.footer.Limits``): an entry beyond them is a lie.
    max_chunk_bytes: int = 256 * 1024 * 1024
    max_chunk_rows: int = 262_144
    max_footer_bytes: int = 1024 * 1024


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


@attrs.frozen
class Manifest:
    """A decoded manifest (its signature already checked when it came from :func:`decode_manifest`)."""

    hotkey: str
    backend: str
    seq: int
    previous: str | None
    round_time: str
    schema_version: int
    chunks: tuple[ChunkEntry, ...]
    index: IndexLayout
    digests: bytes  # DIGEST_BYTES per bucket of the index, in bucket order

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "hotkey": self.hotkey, "backend": self.backend, "seq": self.seq,
            "previous": self.previous, "round_time": self.round_time, "schema_version": self.schema_version,
            "chunks": [entry.as_json() for entry in self.chunks],
            "index": {"counts": _b64(np.asarray(self.index.counts, dtype="<u2").tobytes()),
                      "digests": _b64(self.digests)},
        }

    def by_key(self) -> dict[str, ChunkEntry]:
        return {entry.key(self.hotkey): entry for entry in self.chunks}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_manifest(manifest: Manifest, section: bytes, signer: Any) -> bytes:
    """The object bytes of ``manifest``, signed by ``signer`` (a Wallet or Keypair of ``manifest.hotkey``)."""
    if hotkey_address(signer) != manifest.hotkey:
        raise ValueError(f"the signer is {hotkey_address(signer)}, not the manifest's hotkey {manifest.hotkey}")
    body = manifest.body()
    signature = signing_keypair(signer).sign(canonical(body)).hex()
    header = canonical({"manifest": body, "signature": signature})
    return MAGIC + len(header).to_bytes(4, "little") + header + section


def header_length(prefix: bytes, limits: ManifestLimits = ManifestLimits()) -> int:
    """The header length announced by an object's first ``PREFIX_BYTES``; ManifestError when implausible."""
    if len(prefix) < PREFIX_BYTES or prefix[:4] != MAGIC:
        raise ManifestError("not a storage-core manifest (no SCM1 magic)")
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


def decode_manifest(header: bytes, hotkey: str, limits: ManifestLimits = ManifestLimits()) -> Manifest:
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
    expected = {"format", "hotkey", "backend", "seq", "previous", "round_time", "schema_version", "chunks", "index"}
    _need(set(body) == expected, f"manifest must hold exactly {', '.join(sorted(expected))}")
    previous = body["previous"]
    _need(previous is None or (isinstance(previous, str) and bool(_HEX64.fullmatch(previous))),
          "previous must be null or a sha256")
    raw_chunks = body["chunks"]
    _need(isinstance(raw_chunks, list), "chunks must be a list")
    _need(len(raw_chunks) <= limits.max_chunks, f"{len(raw_chunks)} chunks, over the cap of {limits.max_chunks}")
    chunks = tuple(_entry(raw, index, limits) for index, raw in enumerate(raw_chunks))
    _check_chunks(chunks, _int(body["seq"], "seq"))
    raw_index = body["index"]
    _need(isinstance(raw_index, dict) and set(raw_index) == {"counts", "digests"},
          "index must hold exactly counts and digests")
    try:
        counts = np.frombuffer(base64.b64decode(_str(raw_index["counts"], "index.counts"), validate=True), dtype="<u2")
        digests = base64.b64decode(_str(raw_index["digests"], "index.digests"), validate=True)
    except ValueError as error:  # binascii.Error, or a buffer that is not whole 16-bit counts
        raise ManifestError(f"index counts or digests are not base64 of the right size ({error})") from None
    _need(len(counts) >= 1 and len(digests) == DIGEST_BYTES * len(counts), "index needs one count and one digest a bucket")
    _need(int(counts.max()) <= limits.max_bucket_entries,
          f"an index bucket holds {int(counts.max())} entries (allowed: {limits.max_bucket_entries})")
    layout = IndexLayout(tuple(int(c) for c in counts))
    _need(layout.section_bytes <= limits.max_section_bytes,
          f"index section of {layout.section_bytes} bytes, over the cap of {limits.max_section_bytes}")
    rows = sum(entry.rows for entry in chunks)
    _need(sum(layout.counts) == rows, f"the index holds {sum(layout.counts)} entries for {rows} rows")
    manifest = Manifest(
        hotkey=hotkey, backend=_str(body["backend"], "backend"), seq=_int(body["seq"], "seq"), previous=previous,
        round_time=_str(body["round_time"], "round_time"), schema_version=_int(body["schema_version"], "schema_version"),
        chunks=chunks, index=layout, digests=digests,
    )
    return manifest


def _check_chunks(chunks: Sequence[ChunkEntry], seq: int) -> None:
    """No chunk listed twice, none from a later round than the manifest's, every sample decodable."""
    seen: set[str] = set()
    for entry in chunks:
        _need(entry.sha256 not in seen, f"chunk {entry.sha256} is listed twice")
        seen.add(entry.sha256)
        _need(entry.round <= seq, f"chunk {entry.sha256} claims round {entry.round}, after {seq}")
        try:
            decode_sample(entry.sample)
        except ValueError as error:
            raise ManifestError(f"chunk {entry.sha256}: sample is not base64 words ({error})") from None


def chunk_index(chunks: Sequence[ChunkEntry]) -> dict[str, int]:
    return {entry.sha256: index for index, entry in enumerate(chunks)}
