"""Round manifests: what a check believes of them, and what it refuses.

A miner's latest manifest is the index a check reads instead of every footer. Each test here plants a
manifest a dishonest miner could write (signed with its own key, unless the test is about the
signature) and asserts the check refuses it with a reason that names the problem, or, for an honest
one, that the check reads only the chunks the filter names and still finds every claim.
"""

from __future__ import annotations

import hashlib

import attrs
import pyarrow as pa
import pytest

from storage_core.chain.keys import new_keypair
from storage_core.layout import manifest_key, parse_manifest_key
from storage_core.manifest import ManifestBook
from storage_core.manifest.document import ManifestLimits, decode_manifest
from storage_core.testing import cheats
from storage_core.testing.data import make_table, recent_day
from storage_core.testing.manifests import next_manifest, signed_manifest
from storage_core.testing.memory_store import MemoryStore
from storage_core.verify import CheckSettings, check_claims

BACKEND = "memory"
MINER = new_keypair()
HOTKEY = MINER.ss58_address


def _objects(days: int = 4, rows: int = 300) -> dict[str, bytes]:
    """An honest miner's chunks: ``days`` days of X and Reddit rows."""
    objects = {}
    for day in range(1, days + 1):
        for source in ("x", "reddit"):
            planted = cheats.honest(HOTKEY, make_table(rows, source, seed=day * 10 + len(source), day=recent_day(day)))
            objects[planted.key] = planted.data
    return objects


def _claims(objects: dict[str, bytes], count: int = 24) -> list[str]:
    import io

    import pyarrow.parquet as pq

    uris = sorted(uri for data in objects.values() if data[:4] == b"PAR1"
                  for uri in pq.ParquetFile(io.BytesIO(data)).read(columns=["uri"]).column("uri").to_pylist())
    return uris[:: max(1, len(uris) // count)][:count]


def _check(objects: dict[str, bytes], claims: list[str], **settings: object):  # type: ignore[no-untyped-def]
    return check_claims(MemoryStore(objects, HOTKEY), BACKEND, HOTKEY, claims, CheckSettings(seed="s", **settings))


@pytest.fixture(scope="module")
def honest() -> dict[str, bytes]:
    objects = _objects()
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    return {**objects, key: data}


def test_an_honest_manifest_indexes_the_check(honest: dict[str, bytes]) -> None:
    claims = _claims(honest)
    result = _check(honest, claims)
    assert result.found == set(claims) and not result.rejected and not result.problems
    assert result.manifest.startswith("round 0 (")
    listing = _check(_data(honest), claims)
    assert listing.found == set(claims) and listing.manifest == "none: checked by listing"
    # Three claims of one chunk: the filter names that chunk (plus the one verified against its entry);
    # without a manifest every chunk of the claims' source is opened.
    one = sorted(key for key in honest if "source=x" in key)[0]
    few = _claims({one: honest[one]}, 3)
    indexed, listed = _check(honest, few), _check(_data(honest), few)
    assert indexed.found == listed.found == set(few)
    assert indexed.objects_scanned <= 2 < listed.objects_scanned == sum("source=x" in key for key in honest)


def test_the_miners_uploader_writes_a_manifest_the_check_believes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    import pyarrow.parquet as pq

    from storage_core.chunks import describe_chunk

    objects = _objects(days=2)
    paths = []
    for key, data in objects.items():
        path = tmp_path / f"{hashlib.sha256(data).hexdigest()}.parquet"
        path.write_bytes(data)
        paths.append(describe_chunk(path))
    book = ManifestBook(tmp_path / "manifests", HOTKEY)
    book.add(BACKEND, paths)
    first = book.build(BACKEND, MINER)
    book.published(first)
    assert not book.owes_manifest(BACKEND)
    extra = cheats.honest(HOTKEY, make_table(200, "x", seed=99))
    (tmp_path / "extra.parquet").write_bytes(extra.data)
    book.add(BACKEND, [describe_chunk(tmp_path / "extra.parquet")])
    second = book.build(BACKEND, MINER)
    assert second.seq > first.seq and book.owes_manifest(BACKEND)
    stored = {**objects, extra.key: extra.data, first.key: first.data, second.key: second.data}
    claims = [*_claims(objects, 6), *pq.ParquetFile(io.BytesIO(extra.data)).read(columns=["uri"])
              .column("uri").to_pylist()[:3]]
    result = _check(stored, claims)
    assert result.found == set(claims) and result.manifest.startswith(f"round {second.seq} (")


def _refused(objects: dict[str, bytes], claims: list[str], reason: str) -> None:
    result = _check(objects, claims)
    assert not result.found, result
    assert set(result.rejected) == set(claims)
    assert all(reason in why for why in result.rejected.values()), next(iter(result.rejected.values()))
    assert result.manifest.startswith("refused: ")


def _data(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {key: data for key, data in objects.items() if key.endswith(".parquet")}


def test_a_manifest_signed_by_another_key_voids_the_claims() -> None:
    objects = _objects(days=1)
    other = new_keypair()
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    header_at = 8 + int.from_bytes(data[4:8], "little")
    import json

    document = json.loads(data[8:header_at])
    from storage_core.manifest.document import canonical

    document["signature"] = other.sign(canonical(document["manifest"])).hex()
    header = canonical(document)
    forged = data[:4] + len(header).to_bytes(4, "little") + header + data[header_at:]
    _refused({**objects, manifest_key(HOTKEY, 0, hashlib.sha256(forged).hexdigest()): forged}, _claims(objects, 6),
             f"not {HOTKEY}'s signature")


def test_a_broken_chain_voids_the_claims() -> None:
    objects = _objects(days=1)
    first_key, first = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    second_key, second = next_manifest({**objects, first_key: first}, HOTKEY, MINER, BACKEND)
    claims = _claims(objects, 6)
    assert _check({**objects, first_key: first, second_key: second}, claims).found == set(claims)
    _refused({**objects, second_key: second}, claims, "chain broken")  # round 0 deleted: history rewritten
    rewritten_key, rewritten = signed_manifest(objects, HOTKEY, MINER, BACKEND, seq=1, previous="0" * 64)
    _refused({**objects, first_key: first, rewritten_key: rewritten}, claims, "chain broken")


@pytest.mark.parametrize(("name", "edit", "reason"), [
    ("a chunk listed twice", lambda m: attrs.evolve(m, chunks=(*m.chunks, m.chunks[0])),
     "listed twice"),
    ("a chunk beyond the caps", lambda m: attrs.evolve(m, chunks=(attrs.evolve(m.chunks[0], rows=10**7),
                                                                  *m.chunks[1:])),
     "beyond the 262144-row cap"),
    ("a chunk from a later round", lambda m: attrs.evolve(m, chunks=(attrs.evolve(m.chunks[0], round=5),
                                                                     *m.chunks[1:])),
     "claims round 5"),
    ("another backend's manifest", lambda m: attrs.evolve(m, backend="s3"), "written for backend 's3'"),
    ("another miner's hotkey", lambda m: attrs.evolve(m, hotkey=new_keypair().ss58_address), "names hotkey"),
])
def test_a_malformed_manifest_voids_the_claims(name: str, edit, reason: str) -> None:  # type: ignore[no-untyped-def]
    objects = _objects(days=1)
    signer = MINER
    if name == "another miner's hotkey":  # signed by the key it names, stored under this miner's prefix
        def forge(manifest):  # type: ignore[no-untyped-def]
            return manifest

        key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
        import json

        from storage_core.manifest.document import canonical

        header_at = 8 + int.from_bytes(data[4:8], "little")
        document = json.loads(data[8:header_at])
        document["manifest"]["hotkey"] = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
        header = canonical(document)
        data = data[:4] + len(header).to_bytes(4, "little") + header + data[header_at:]
        key = manifest_key(HOTKEY, 0, hashlib.sha256(data).hexdigest())
    else:
        key, data = signed_manifest(objects, HOTKEY, signer, BACKEND, edit=edit)
    _refused({**objects, key: data}, _claims(objects, 6), reason)


def test_an_index_that_does_not_match_its_digest_or_is_stuffed_is_refused() -> None:
    objects = _objects(days=4)
    claims = _claims(objects, 6)
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND, edit_section=lambda s: bytes(len(s)))
    _refused({**objects, key: data}, claims, "does not match its digest")
    # Every chunk's index entries name the first claim: a check would open every chunk for it.
    uris = {k: _claims({k: v}, 10_000) for k, v in objects.items()}
    stuffed = {k: [claims[0], *[u for u in held if u != claims[0]]] for k, held in uris.items()}
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND, claims=stuffed)
    _refused({**objects, key: data}, claims, "chunks for one URI (stuffed)")


def test_garbage_and_oversized_manifests_are_refused() -> None:
    objects = _objects(days=1)
    claims = _claims(objects, 6)
    garbage = b"not a manifest at all"
    _refused({**objects, manifest_key(HOTKEY, 0, hashlib.sha256(garbage).hexdigest()): garbage}, claims, "no SCM2 magic")
    huge = b"SCM2" + (2**31).to_bytes(4, "little") + b"{}"
    _refused({**objects, manifest_key(HOTKEY, 0, hashlib.sha256(huge).hexdigest()): huge}, claims,
             f"allowed: 2 to {ManifestLimits().max_header_bytes}")
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    _refused({**objects, key: data + b"tail"}, claims, "its header describes")


def test_two_manifests_for_one_round_are_refused() -> None:
    objects = _objects(days=1)
    first = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    second = signed_manifest(dict(list(objects.items())[:1]), HOTKEY, MINER, BACKEND)
    _refused({**objects, first[0]: first[1], second[0]: second[1]}, _claims(objects, 6), "2 manifests claim round 0")


def test_chunks_the_manifest_does_not_list_are_never_searched_and_listed_ones_must_exist() -> None:
    objects = _objects(days=2)
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    late = cheats.honest(HOTKEY, make_table(200, "x", seed=77))
    late_claims = _claims({late.key: late.data}, 4)
    result = _check({**objects, key: data, late.key: late.data}, late_claims)
    assert not result.found and any(p.key == late.key and "not listed" in p.problem for p in result.problems)
    gone = next(k for k in objects)
    result = _check({**{k: v for k, v in objects.items() if k != gone}, key: data}, _claims(objects, 8))
    assert any(p.key == gone and "missing from the store" in p.problem for p in result.problems)


def test_a_footer_that_disagrees_with_the_manifest_is_the_chunks_problem() -> None:
    objects = _objects(days=1)
    target = sorted(objects)[0]
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND, edit=lambda m: attrs.evolve(
        m, chunks=tuple(attrs.evolve(c, footer=c.footer + 1) if c.key(HOTKEY) == target else c for c in m.chunks)))
    claims = _claims({target: objects[target]}, 4)
    result = _check({**objects, key: data}, claims)
    assert set(result.rejected) == set(claims)
    assert all("disagrees with the manifest" in why for why in result.rejected.values()), result.rejected


def test_a_lying_sample_is_caught_when_its_chunk_is_verified() -> None:
    objects = _objects(days=1)
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND, edit=lambda m: attrs.evolve(
        m, chunks=tuple(attrs.evolve(c, sample="AQAAAAAAAAA=") for c in m.chunks)))  # one made-up value
    _refused({**objects, key: data}, _claims(objects, 6), "URI sample is not the chunk's")


def test_a_duplicate_hidden_from_the_index_is_caught_when_its_chunk_is_verified() -> None:
    """A row stored twice, the second chunk's index entries naming another URI in its place: the duplicate is
    never searched there, but holding that chunk to its entry (every chunk here, by ``verify_chunks``) shows
    the lie."""
    table = make_table(300, "x", seed=11, day=recent_day(1))
    original = cheats.honest(HOTKEY, table)
    copy = cheats.honest(HOTKEY, pa.concat_tables([make_table(300, "x", seed=12, day=recent_day(1)), table.slice(0, 1)]))
    objects = {original.key: original.data, copy.key: copy.data}
    duplicated = table.column("uri")[0].as_py()
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    honest_result = _check({**objects, key: data}, [duplicated])
    assert "duplicate" in honest_result.rejected.get(duplicated, ""), honest_result
    held = _claims({copy.key: copy.data}, 10_000)
    hidden = {copy.key: [uri if uri != duplicated else "https://x.com/nobody/status/1" for uri in held]}
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND, claims=hidden)
    unverified = _check({**objects, key: data}, [duplicated], verify_chunks=0)
    assert unverified.found == {duplicated}  # unverified, the lie works: this is what verification is for
    caught = _check({**objects, key: data}, [duplicated], verify_chunks=2)
    assert not caught.found
    assert f"chunk {hashlib.sha256(copy.data).hexdigest()[:12]}: the manifest's" in caught.rejected[duplicated]


def _table_spans(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Where a manifest's chunk table starts, and each entry's span within it."""
    end = 8 + int.from_bytes(data[4:8], "little")
    header = decode_manifest(data[8:end], HOTKEY)
    return end, [header.span(i) for i in range(header.chunk_count)]


def test_an_entry_that_does_not_match_its_record_voids_the_claims() -> None:
    objects = _objects(days=2)
    claims = _claims(objects, 6)
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    start, spans = _table_spans(data)
    forged = bytearray(data)
    for low, _high in spans:  # one byte of every entry: whichever the check reads, it was altered after signing
        forged[start + low + 1] ^= 0x01
    forged_key = manifest_key(HOTKEY, parse_manifest_key(key).seq, hashlib.sha256(forged).hexdigest())
    _refused({**objects, forged_key: bytes(forged)}, claims, "does not match its digest in the signed header")


def test_a_check_reads_the_entries_of_the_chunks_it_opens_not_the_whole_table() -> None:
    objects = _objects(days=8)
    key, data = signed_manifest(objects, HOTKEY, MINER, BACKEND)
    start, spans = _table_spans(data)
    table = range(start, start + spans[-1][1])
    reads: list[tuple[int, int]] = []

    class Recording(MemoryStore):
        def read_range(self, key_: str, low: int, high: int) -> bytes:
            if key_ == key:
                reads.append((low, high))
            return super().read_range(key_, low, high)

    claim = _claims(objects, 1)
    result = check_claims(Recording({**objects, key: data}, HOTKEY), BACKEND, HOTKEY, claim,
                          CheckSettings(seed="s", verify_chunks=1))
    assert result.found == set(claim)
    entry_reads = [(low, high) for low, high in reads if low in table]
    assert 1 <= len(entry_reads) <= 2  # the claim's chunk and the verified one
    assert sum(high - low for low, high in entry_reads) < (spans[-1][1]) / 4  # 16 chunks listed


def test_superseded_manifests_are_the_miners_older_rounds_only() -> None:
    from storage_core.manifest.retention import superseded_manifests

    other = new_keypair().ss58_address
    mine = [manifest_key(HOTKEY, seq, f"{seq:064x}") for seq in (5, 1, 9, 3)]
    theirs = [manifest_key(other, seq, f"{seq:064x}") for seq in (1, 2, 3)]
    chunks = list(_objects(days=1))
    keys = [*mine, *theirs, *chunks]
    assert superseded_manifests(keys, HOTKEY) == [mine[3], mine[1]]  # rounds 3 and 1; 9 and 5 stay
    assert superseded_manifests(keys, HOTKEY, keep=4) == []
    assert superseded_manifests(keys, other, keep=1) == [theirs[1], theirs[0]]
