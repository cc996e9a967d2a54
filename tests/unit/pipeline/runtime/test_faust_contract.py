"""What :mod:`pipeline.runtime` relies on in faust-streaming and aiokafka, asserted.

Each subclass there replaces or extends a faust method and names the lines it replaces; these
tests fail when an upgrade changes those methods, their signatures or the attributes the
subclasses use, so the subclass is re-read before it runs against a faust it was not written
for (the pin in ``pyproject.toml`` says which version they passed with).
"""

from __future__ import annotations

import importlib.metadata
import inspect

import aiokafka
import faust
from faust.app import base as app_base
from faust.stores import base as store_base
from faust.stores import memory
from faust.streams import Stream
from faust.tables import base as table_base
from faust.tables import manager, recovery
from faust.tables import table as table_mod
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.runtime.app import StreamWardenApp, Transport
from pipeline.runtime.consumer import BatchDrainConsumer, FetchWaitConsumerThread
from pipeline.runtime.producer import BatchingProducer
from pipeline.runtime.tables import BatchedTable, ChangelogStore


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def _source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_the_pinned_versions_are_installed() -> None:
    assert importlib.metadata.version("faust-streaming") == "0.15.3"
    assert importlib.metadata.version("aiokafka").startswith("0.14.")


def test_the_drain_replaced_still_races_each_message_against_suspend_flow() -> None:
    drain = faust_consumer.Consumer._drain_messages
    assert inspect.iscoroutinefunction(drain)
    assert _params(drain) == ["self", "fetcher"]
    source = _source(drain)
    assert "self.wait_first(" in source and "callback(message), self.suspend_flow.wait()" in source
    assert "set_read_offset(tp, offset)" in source and "self._add_gap(" in source


def test_what_the_batch_drain_uses_of_faust_s_consumer_exists() -> None:
    init = _source(faust_consumer.Consumer.__init__)
    for attribute in (
        "self.suspend_flow = Event()",
        "self._read_offset = defaultdict(lambda: None)",
        "self._committed_offset = defaultdict(lambda: None)",
        "self._commit_every = ",
    ):
        assert attribute in init, attribute
    consumer = faust_consumer.Consumer
    assert consumer._n_acked == 0  # a class default, counted up by ack()
    assert _params(consumer._add_gap) == ["self", "tp", "offset_from", "offset_to"]
    assert _params(consumer.getmany) == ["self", "timeout"]
    assert _params(consumer.perform_seek) == ["self"]
    assert "seek_to_committed" in _source(consumer.perform_seek)
    assert _params(faust_aiokafka.Consumer._new_consumer_thread) == ["self"]
    assert faust_consumer.CONSUMER_FETCHING == "FETCHING"


def test_faust_commits_only_after_flushing_the_producer() -> None:
    """The batched changelog's at-least-once argument (``pipeline.runtime.tables``)."""
    source = _source(faust_consumer.Consumer._commit_offsets)
    assert source.index("await self.app.producer.flush()") < source.index("self._commit(")
    # aiokafka's flush waits for every batch in the accumulator, send_batch's included.
    assert "_message_accumulator.flush()" in _source(aiokafka.AIOKafkaProducer.flush)


def test_streams_skip_messages_of_an_older_generation() -> None:
    """Why a fetch delivered across a rebalance is harmless (``pipeline.runtime.consumer``)."""
    assert "message.generation_id != self.app.consumer_generation_id" in _source(Stream._py_aiter)


def test_the_fetch_wait_is_hard_coded_and_read_when_the_consumer_starts() -> None:
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert _params(thread._create_worker_consumer) == ["self", "transport"]
    assert "fetch_max_wait_ms=1500" in _source(thread._create_worker_consumer)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in _source(
        aiokafka.AIOKafkaConsumer.__init__
    )
    assert "self._fetch_max_wait_ms" in _source(aiokafka.AIOKafkaConsumer.start)


def test_record_batches_go_through_the_producer_faust_flushes() -> None:
    assert _params(faust_aiokafka.Producer._ensure_producer) == ["self"]
    producer = aiokafka.AIOKafkaProducer
    assert _params(producer.create_batch) == ["self"]
    assert _params(producer.send_batch) == ["self", "batch", "topic", "partition"]


def test_the_table_hooks_the_batched_table_overrides_exist() -> None:
    collection = table_base.Collection
    assert _params(collection.send_changelog) == [
        "self",
        "partition",
        "key",
        "value",
        "key_serializer",
        "value_serializer",
    ]
    assert _params(collection._new_store) == ["self"]
    assert "self.send_changelog(" in _source(table_mod.Table.on_key_set)
    assert "self.send_changelog(" in _source(table_mod.Table.on_key_del)
    assert _params(store_base.Store.on_rebalance) == [
        "self",
        "assigned",
        "revoked",
        "newly_assigned",
        "generation_id",
    ]
    assert _params(memory.Store.apply_changelog_batch) == ["self", "batch", "to_key", "to_value"]
    assert _params(memory.Store.on_recovery_completed) == ["self", "active_tps", "standby_tps"]


def test_recovery_reads_the_store_s_persisted_offset_after_the_store_saw_the_rebalance() -> None:
    assert "table.persisted_offset(tp)" in _source(recovery.Recovery._add)
    rebalance = _source(manager.TableManager.on_rebalance)
    assert rebalance.index("table.on_rebalance") < rebalance.index("self.recovery.on_rebalance")
    assert "self.data.on_rebalance(" in _source(table_base.Collection.on_rebalance)
    assert "active_remaining" in _source(recovery.Recovery.need_recovery)


def test_the_app_builds_its_transports_in_two_factory_methods() -> None:
    assert _params(app_base.App._new_transport) == ["self"]
    assert _params(app_base.App._new_producer_transport) == ["self"]
    assert "transport.by_url(self.conf.broker_consumer[0])" in _source(app_base.App._new_transport)
    assert _params(faust_aiokafka.ThreadDelegateConsumer._commit) == ["self", "offsets"]
    assert hasattr(faust_aiokafka.Transport, "Consumer")
    assert hasattr(faust_aiokafka.Transport, "Producer")


def test_the_app_is_wired_with_the_runtime_subclasses() -> None:
    app = StreamWardenApp("contract", broker="kafka://localhost:1", autodiscover=False)
    assert isinstance(app.transport, Transport)
    assert isinstance(app.producer_transport, Transport)
    assert Transport.Consumer is BatchDrainConsumer
    assert Transport.Producer is BatchingProducer
    assert issubclass(FetchWaitConsumerThread, faust_aiokafka.AIOKafkaConsumerThread)
    table = BatchedTable(app=app, name="t", default=None, partitions=2, key_type=bytes)
    assert isinstance(table.data, ChangelogStore)
    assert isinstance(table, faust.Table)
