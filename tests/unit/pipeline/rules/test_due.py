"""DueIndex: a multiset of (due, key) entries popped in (due, key) order, shared buckets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.rules.due import DueIndex

FINGERPRINT = "1324ac7e2912af88"


def test_keys_sharing_a_due_time_share_a_bucket_and_pop_in_key_order() -> None:
    index = DueIndex()
    for key in ("c", "a", "b"):
        index.schedule(key, 100)
    index.schedule("z", 50)
    assert len(index._times) == 2
    assert list(index.pop_due(99)) == [(50, "z")]
    assert list(index.pop_due(100)) == [(100, "a"), (100, "b"), (100, "c")]
    assert len(index) == 0 and index.earliest() is None


def test_a_key_twice_in_one_bucket_pops_once_and_in_two_buckets_twice() -> None:
    index = DueIndex()
    index.schedule("k", 100)
    index.schedule("k", 100)
    index.schedule("k", 40)
    assert len(index) == 3  # entries, repeats included
    assert index.keys() == {"k"}
    assert index.earliest() == 40
    assert list(index.pop_due(1000)) == [(40, "k"), (100, "k")]
    assert len(index) == 0


def test_fingerprints_are_packed_and_come_back_as_the_same_text() -> None:
    index = DueIndex()
    index.schedule(FINGERPRINT, 100)
    bucket = index._buckets[100]
    assert list(bucket.fingerprints) == [int(FINGERPRINT, 16)] and bucket.others == []
    assert list(index.pop_due(100)) == [(100, FINGERPRINT)]


def test_keys_that_only_look_like_fingerprints_are_kept_as_text() -> None:
    index = DueIndex()
    lookalikes = ["1324AC7E2912AF88", "1324_c7e2912af88", "+324ac7e2912af88", "1324ac7e2912af8"]
    for key in lookalikes:
        index.schedule(key, 7)
    assert list(index._buckets[7].fingerprints) == []
    assert [key for _due, key in index.pop_due(7)] == sorted(lookalikes)


_keys = st.sampled_from(["a", "b", "ffffffffffffffff", "0000000000000000", FINGERPRINT, "0x1"])


@given(st.lists(st.tuples(_keys, st.integers(0, 50)), max_size=60))
def test_pops_each_distinct_entry_once_in_order(ops: list[tuple[str, int]]) -> None:
    index = DueIndex()
    for key, due in ops:
        index.schedule(key, due)
    assert len(index) == len(ops)
    assert index.keys() == {key for key, _due in ops}
    distinct = sorted(set((due, key) for key, due in ops))
    assert list(index.pop_due(25)) == [(d, k) for d, k in distinct if d <= 25]
    assert list(index.pop_due(50)) == [(d, k) for d, k in distinct if d > 25]
    assert len(index) == 0
