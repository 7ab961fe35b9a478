"""kafka-python driver for Tidelog's end-to-end tests (tests/tests/kafka_python.rs). Same
subcommands and JSON lines as tests/clients/node/kafka.js; see common.py. --debug logs
kafka-python's protocol detail (DEBUG) to stderr."""

import logging
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

import common

CLIENT_ID = "tidelog-e2e-kafka-python"


def admin(args):
    return KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id=CLIENT_ID,
                            request_timeout_ms=20000)


def metadata(args):
    client = admin(args)
    try:
        cluster = client.describe_cluster()
        common.emit("cluster", clusterId=cluster.get("cluster_id"),
                    controller=cluster.get("controller_id"),
                    brokers=[{"nodeId": b.get("broker_id", b.get("node_id")), "host": b["host"], "port": b["port"]}
                             for b in cluster.get("brokers", [])])
        common.emit("topics", names=sorted(client.list_topics()))
    finally:
        client.close()


def create_topic(args):
    common.need(args, "topic", "partitions")
    client = admin(args)
    try:
        client.create_topics({args.topic: {"num_partitions": args.partitions,
                                           "replication_factor": 1}})
        described = client.describe_topics([args.topic])[0]
        common.emit("created", topic=args.topic, created=True, partitions=sorted(
            ({"partition": p["partition_index"], "leader": p["leader_id"],
              "errorCode": p["error_code"]} for p in described["partitions"]),
            key=lambda p: p["partition"]))
    finally:
        client.close()


def produce(args):
    common.need(args, "topic", "records", "tag")
    acks = {"0": 0, "1": 1, "-1": "all", "all": "all"}[args.acks]
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap, client_id=CLIENT_ID, acks=acks,
        enable_idempotence=args.idempotent,
        compression_type=None if args.compression == "none" else args.compression,
        linger_ms=5, allow_auto_create_topics=False,
        key_serializer=str.encode, value_serializer=str.encode)
    try:
        sent = list(common.records(args))
        futures = [producer.send(args.topic, key=key, value=value, headers=headers)
                   for key, value, headers in sent]
        producer.flush(timeout=args.timeout_ms / 1000)
        for (key, value, _), future in zip(sent, futures):
            metadata = future.get(timeout=args.timeout_ms / 1000)
            # acks=0: no offset comes back (-1).
            offset = metadata.offset if metadata.offset >= 0 else None
            common.emit("produced", key=key, value=value, partition=metadata.partition,
                        offset=offset)
    finally:
        producer.close()


def offsets(args):
    common.need(args, "topic")
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, client_id=CLIENT_ID)
    try:
        partitions = sorted(consumer.partitions_for_topic(args.topic) or [])
        tps = [TopicPartition(args.topic, p) for p in partitions]
        low = consumer.beginning_offsets(tps)
        high = consumer.end_offsets(tps)
        for tp in tps:
            common.emit("offsets", partition=tp.partition, low=low[tp], high=high[tp])
    finally:
        consumer.close()


def consumer_for(args, member):
    return KafkaConsumer(
        bootstrap_servers=args.bootstrap, client_id=f"{CLIENT_ID}-{member}", group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=10000,
        heartbeat_interval_ms=500, fetch_max_wait_ms=500, allow_auto_create_topics=False)


def poll_into(topic, progress, member, consumer):
    batches = consumer.poll(timeout_ms=50)
    progress.assigned(member, [tp.partition for tp in consumer.assignment() if tp.topic == topic])
    for tp, messages in sorted(batches.items()):
        for message in messages:
            progress.consumed(member, message.partition, message.offset, common.text(message.key),
                              common.text(message.value), common.headers_dict(message.headers))
            target = progress.commit_target(message.partition, message.offset)
            if target is not None:
                consumer.commit({tp: OffsetAndMetadata(target, "", -1)})
                progress.committed_one(member, message.partition, target)


def group(args):
    common.need(args, "topic", "group", "end")

    def open_member(member):
        consumer = consumer_for(args, member)
        consumer.subscribe([args.topic])
        return consumer

    common.run_group(args, common.GroupProgress(args), open_member,
                     lambda progress, member, consumer: poll_into(args.topic, progress, member,
                                                                  consumer),
                     lambda consumer: consumer.close(autocommit=False))


def consume(args):
    common.need(args, "topic", "group", "end")
    deadline = common.Deadline(args.timeout_ms)
    consumer = consumer_for(args, "m0")
    try:
        tps = [TopicPartition(args.topic, p) for p in sorted(args.end)]
        start = {}
        for tp in tps:
            offset = consumer.committed(tp)
            start[tp.partition] = offset or 0
            common.emit("committed_before", partition=tp.partition, offset=start[tp.partition])
        last = {}
        consumer.subscribe([args.topic])
        while any(start.get(p, 0) < high and last.get(p) != high - 1 for p, high in args.end.items()):
            deadline.check("the consumer to reach --end")
            for _, messages in sorted(consumer.poll(timeout_ms=100).items()):
                for message in messages:
                    common.emit("consumed", member="m0", partition=message.partition,
                                offset=message.offset, key=common.text(message.key),
                                value=common.text(message.value),
                                headers=common.headers_dict(message.headers))
                    last[message.partition] = message.offset
        common.emit("reached_end")
    finally:
        consumer.close(autocommit=False)


def committed(args):
    common.need(args, "topic", "group")
    client = admin(args)
    try:
        result = client.list_group_offsets({args.group: None})
        offsets = result[args.group] if args.group in result else result
        for tp, meta in sorted(offsets.items()):
            if tp.topic == args.topic:
                common.emit("committed", partition=tp.partition, offset=meta.offset)
    finally:
        client.close()


def delete_topic(args):
    common.need(args, "topic")
    client = admin(args)
    try:
        client.delete_topics([args.topic])
        common.emit("deleted", topic=args.topic)
        common.emit("topics", names=sorted(client.list_topics()))
    finally:
        client.close()


class AssignorWarnings(logging.Handler):
    """kafka-python's assignors warn, and assign nothing, for a subscribed topic whose
    metadata the leader lacks. Each warning becomes an `assignor_warning` event, and the tests
    require none (tidelog_e2e::kafka_scenario). The leader rejoins when the metadata arrives,
    and kafka-python (3.0.12; its master as of 2026-08) can lose that metadata-triggered
    rejoin: need_rejoin() turns False once the new assignment is computed, so if poll()'s
    timeout ends before the SyncGroup answer, the answer is never collected, heartbeats stay
    off, the session expires and the poll loop spins. Kafka's Java client fixed the same case
    in KAFKA-9815. The broker's initial rebalance delay (groups.initial_rebalance_delay_ms,
    Kafka's group.initial.rebalance.delay.ms) gives a new group's leader time to fetch the
    metadata first; an unchanged application relies on it, as it does against Kafka."""

    def emit(self, record):
        common.emit("assignor_warning", logger=record.name, message=record.getMessage())


COMMANDS = {
    "metadata": metadata, "create-topic": create_topic, "produce": produce, "offsets": offsets,
    "group": group, "consume": consume, "committed": committed, "delete-topic": delete_topic,
}


if __name__ == "__main__":
    parsed = common.parser(__doc__).parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if parsed.debug else logging.WARNING)
    logging.getLogger("kafka.coordinator.assignors").addHandler(AssignorWarnings(logging.WARNING))
    common.run(lambda: COMMANDS[parsed.command](parsed))
    sys.exit(0)
