"""The ledger's URI digests: the vectorised page path equals the one-URI reference, and the scheme is fixed."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_core.export.arrow_values import int64s, strings
from storage_core.export.digests import DIGEST_BYTES, page_digests, split, uri_digest, uri_digests

# Zero bytes, multi-byte UTF-8 and URIs past the vectorised path's 512 bytes all occur in the strategy.
uri_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.text(min_size=500, max_size=700)


def _reference(values: list[str]) -> bytes:
    return b"".join(uri_digest(value) for value in values)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(uri_text, min_size=1, max_size=60), start=st.integers(0, 10))
def test_page_digests_equal_the_reference_for_any_text_and_slice(values, start):
    array = pa.array(values, pa.string())
    assert uri_digests(array) == _reference(values)
    piece = array.slice(min(start, len(values)), 20)
    assert uri_digests(piece) == _reference(values[start : start + 20])
    assert uri_digests(pa.chunked_array([array, array])) == _reference(values) * 2


def test_the_scheme_is_pinned():
    """Ledgers store these digests: changing the scheme needs a new name and a migration, not a silent edit."""
    assert uri_digest("").hex() == "072647026cbd00b8"
    assert uri_digest("https://x.com/user_0/status/0000000000000032699").hex() == "52c5b6c9ddd85672"
    reddit = "https://www.reddit.com/r/bitcoin/comments/0000000000020/comment/c0000000000020/"
    assert uri_digest(reddit).hex() == "d5a66ac492da66a6"


def test_near_identical_uris_do_not_collide():
    uris = [f"https://x.com/user_{i % 97}/status/{i:019d}" for i in range(200_000)]
    blob = uri_digests(strings(uris))
    assert len(blob) == DIGEST_BYTES * len(uris)
    assert len(split(blob)) == len(uris)
    # Padding is part of the definition: a URI and the same URI behind a zero byte differ.
    assert uri_digest("a") != uri_digest("\0a") != uri_digest("\0\0\0\0\0\0\0\0a")


def test_page_digests_group_by_bucket():
    uris = [f"https://x.com/u/status/{i}" for i in range(50)]
    buckets = [7 - i % 3 for i in range(50)]
    grouped = page_digests(strings(uris), int64s(buckets)).grouped()
    assert sorted(grouped) == [5, 6, 7]
    for bucket, blob in grouped.items():
        assert split(blob) == {uri_digest(u) for u, b in zip(uris, buckets) if b == bucket}


def test_a_null_uri_is_refused_by_name():
    with pytest.raises(ValueError, match="null URI"):
        uri_digests(pa.array(["https://x.com/a", None], pa.string()))


@pytest.mark.parametrize("buckets", [[7, 5, 7, 6, 5, 7], [2**62, -(2**62), 2**62, 0, -(2**62), 2**62]])
def test_grouping_keeps_each_bucket_in_row_order_whatever_the_bucket_range(buckets):
    uris = [f"https://x.com/u/status/{i}" for i in range(len(buckets))]
    grouped = page_digests(strings(uris), int64s(buckets)).grouped()
    for bucket, blob in grouped.items():
        assert blob == b"".join(uri_digest(u) for u, b in zip(uris, buckets) if b == bucket)
    assert sorted(grouped) == sorted(set(buckets))


def test_page_digests_keep_no_view_of_the_page_buffers():
    # A view on the page's bucket column would keep the whole page read through ADBC (content
    # included) alive until the digest log spills: +120 MiB at the peak of a 1M-row export.
    buckets = pa.chunked_array([int64s(list(range(100)))]).slice(10, 50)
    digests = page_digests(strings([f"https://x.com/u/status/{i}" for i in range(50)]), buckets)
    assert digests.buckets.flags.owndata
    assert digests.buckets.tolist() == list(range(10, 60))
