"""DueIndex: earliest due time per key, popped in (due, key) order, shared buckets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.rules.due import DueIndex


def test_keys_sharing_a_due_time_share_a_bucket_and_pop_in_key_order() -> None:
    index = DueIndex()
    for key in ("c", "a", "b"):
        index.schedule(key, 100)
    index.schedule("z", 50)
    assert len(index._times) == 2
    assert list(index.pop_due(99)) == [(50, "z")]
    assert list(index.pop_due(100)) == [(100, "a"), (100, "b"), (100, "c")]
    assert len(index) == 0 and index.earliest() is None


def test_a_later_due_time_is_ignored_an_earlier_one_replaces() -> None:
    index = DueIndex()
    index.schedule("k", 100)
    index.schedule("k", 200)  # later: the key stays due at 100
    assert index.get("k") == 100
    index.schedule("k", 40)  # earlier: the 100 entry becomes stale
    assert index.earliest() == 40
    assert list(index.pop_due(1000)) == [(40, "k")]  # once, not again at 100


def test_stale_buckets_do_not_count_as_earliest() -> None:
    index = DueIndex()
    index.schedule("k", 100)
    index.schedule("k", 40)
    assert list(index.pop_due(40)) == [(40, "k")]
    assert index.earliest() is None  # the bucket at 100 only holds the stale entry


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 50)), max_size=60))
def test_pops_what_a_dict_of_earliest_due_times_says(ops: list[tuple[str, int]]) -> None:
    index = DueIndex()
    model: dict[str, int] = {}
    for key, due in ops:
        index.schedule(key, due)
        model[key] = min(due, model.get(key, due))
    assert len(index) == len(model)
    assert list(index.pop_due(25)) == sorted((d, k) for k, d in model.items() if d <= 25)
    assert list(index.pop_due(50)) == sorted((d, k) for k, d in model.items() if d > 25)
