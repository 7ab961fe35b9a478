"""confluent-kafka (librdkafka) driver for Tidelog's end-to-end tests
(tests/tests/kafka_librdkafka.rs). Same subcommands and JSON lines as
tests/clients/node/kafka.js; see common.py. --group-protocol consumer runs the group members
on KIP-848's ConsumerGroupHeartbeat instead of JoinGroup/SyncGroup. --debug turns on
librdkafka's `debug=protocol,broker,cgrp` log (stderr)."""

import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from confluent_kafka import ConsumerGroupTopicPartitions

import common


def base_config(args):
    config = {"bootstrap.servers": args.bootstrap, "client.id": "tidelog-e2e-confluent"}
    if args.debug:
        config["debug"] = "protocol,broker,cgrp,topic,msg"
    return config


def admin(args):
    return AdminClient(base_config(args))


def wait(futures, timeout):
    return {key: future.result(timeout=timeout) for key, future in futures.items()}


def metadata(args):
    client = admin(args)
    cluster = client.describe_cluster(request_timeout=20).result(timeout=30)
    common.emit("cluster", clusterId=cluster.cluster_id,
                controller=cluster.controller.id if cluster.controller else None,
                brokers=[{"nodeId": node.id, "host": node.host, "port": node.port}
                         for node in cluster.nodes])
    listed = client.list_topics(timeout=20)
    common.emit("topics", names=sorted(listed.topics), controller_id=listed.controller_id,
                brokers=sorted(listed.brokers))


def create_topic(args):
    common.need(args, "topic", "partitions")
    client = admin(args)
    wait(client.create_topics([NewTopic(args.topic, num_partitions=args.partitions,
                                        replication_factor=1)], request_timeout=20), 30)
    topic = client.list_topics(topic=args.topic, timeout=20).topics[args.topic]
    common.emit("created", topic=args.topic, created=True, partitions=[
        {"partition": p.id, "leader": p.leader, "errorCode": p.error.code() if p.error else 0}
        for p in sorted(topic.partitions.values(), key=lambda p: p.id)])


def produce(args):
    common.need(args, "topic", "records", "tag")
    config = base_config(args)
    config.update({
        "acks": args.acks,
        "enable.idempotence": args.idempotent,
        "compression.type": args.compression,
        "linger.ms": 5,
        "batch.num.messages": args.per_send,
        # The default partitioner of the Java client and kafkajs (murmur2), so every client
        # puts a key in the same partition.
        "partitioner": "murmur2_random",
        "message.timeout.ms": args.timeout_ms,
    })
    producer = Producer(config)
    sent = list(common.records(args))
    reports = [None] * len(sent)
    errors = []

    def delivered(index):
        def callback(error, message):
            if error is not None:
                errors.append(f"record {index}: {error}")
            reports[index] = message
        return callback

    for index, (key, value, headers) in enumerate(sent):
        producer.produce(args.topic, key=key, value=value, headers=headers, on_delivery=delivered(index))
        producer.poll(0)
    remaining = producer.flush(args.timeout_ms / 1000)
    if remaining or errors:
        raise RuntimeError(f"{remaining} records undelivered; errors: {errors}")
    for (key, value, _), message in zip(sent, reports):
        offset = message.offset()
        # acks=0: librdkafka reports no offset (-1001).
        common.emit("produced", key=key, value=value, partition=message.partition(),
                    offset=offset if offset >= 0 else None)


def offsets(args):
    common.need(args, "topic")
    client = admin(args)
    partitions = client.list_topics(topic=args.topic, timeout=20).topics[args.topic].partitions
    earliest = wait(client.list_offsets({TopicPartition(args.topic, p): OffsetSpec.earliest()
                                         for p in partitions}, request_timeout=20), 30)
    latest = wait(client.list_offsets({TopicPartition(args.topic, p): OffsetSpec.latest()
                                       for p in partitions}, request_timeout=20), 30)
    low = {tp.partition: info.offset for tp, info in earliest.items()}
    high = {tp.partition: info.offset for tp, info in latest.items()}
    # The consumer's own path to the same numbers (ListOffsets from the fetcher).
    consumer = Consumer({**base_config(args), "group.id": "tidelog-e2e-watermarks"})
    try:
        for partition in sorted(partitions):
            watermark_low, watermark_high = consumer.get_watermark_offsets(
                TopicPartition(args.topic, partition), timeout=20)
            common.emit("offsets", partition=partition, low=low[partition], high=high[partition],
                        watermark_low=watermark_low, watermark_high=watermark_high)
    finally:
        consumer.close()


def consumer_config(args, member):
    config = base_config(args)
    config.update({
        "group.id": args.group,
        "client.id": f"tidelog-e2e-confluent-{member}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 500,
        "group.protocol": args.group_protocol,
    })
    if args.group_protocol == "classic":
        # KIP-848 members take these from the broker and refuse them here.
        config.update({"session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
    return config


def committed_offsets(args, consumer):
    partitions = consumer.list_topics(topic=args.topic, timeout=20).topics[args.topic].partitions
    result = consumer.committed([TopicPartition(args.topic, p) for p in sorted(partitions)],
                                timeout=20)
    return {tp.partition: tp.offset for tp in result}


def poll_into(topic, progress, member, consumer):
    message = consumer.poll(0.05)
    progress.assigned(member, [tp.partition for tp in consumer.assignment() if tp.topic == topic])
    if message is None:
        return
    if message.error():
        raise KafkaException(message.error())
    progress.consumed(member, message.partition(), message.offset(), common.text(message.key()),
                      common.text(message.value()), common.headers_dict(message.headers()))
    target = progress.commit_target(message.partition(), message.offset())
    if target is not None:
        consumer.commit(offsets=[TopicPartition(topic, message.partition(), target)],
                        asynchronous=False)
        progress.committed_one(member, message.partition(), target)


def group(args):
    common.need(args, "topic", "group", "end")

    def open_member(member):
        consumer = Consumer(consumer_config(args, member))
        consumer.subscribe([args.topic])
        return consumer

    common.run_group(args, common.GroupProgress(args), open_member,
                     lambda progress, member, consumer: poll_into(args.topic, progress, member,
                                                                  consumer),
                     lambda consumer: consumer.close())


def consume(args):
    common.need(args, "topic", "group", "end")
    deadline = common.Deadline(args.timeout_ms)
    consumer = Consumer(consumer_config(args, "m0"))
    try:
        start = {p: max(0, offset) for p, offset in committed_offsets(args, consumer).items()}
        for partition, offset in sorted(start.items()):
            common.emit("committed_before", partition=partition, offset=offset)
        last = {}
        consumer.subscribe([args.topic])
        while any(start.get(p, 0) < high and last.get(p) != high - 1 for p, high in args.end.items()):
            deadline.check("the consumer to reach --end")
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            common.emit("consumed", member="m0", partition=message.partition(),
                        offset=message.offset(), key=common.text(message.key()),
                        value=common.text(message.value()),
                        headers=common.headers_dict(message.headers()))
            last[message.partition()] = message.offset()
        common.emit("reached_end")
    finally:
        consumer.close()


def committed(args):
    common.need(args, "topic", "group")
    client = admin(args)
    request = ConsumerGroupTopicPartitions(args.group)
    futures = client.list_consumer_group_offsets([request], request_timeout=20)
    result = futures[args.group].result(timeout=30)
    for tp in sorted(result.topic_partitions, key=lambda tp: tp.partition):
        if tp.topic == args.topic:
            common.emit("committed", partition=tp.partition, offset=tp.offset)


def delete_topic(args):
    common.need(args, "topic")
    client = admin(args)
    wait(client.delete_topics([args.topic], request_timeout=20), 30)
    common.emit("deleted", topic=args.topic)
    common.emit("topics", names=sorted(client.list_topics(timeout=20).topics))


COMMANDS = {
    "metadata": metadata, "create-topic": create_topic, "produce": produce, "offsets": offsets,
    "group": group, "consume": consume, "committed": committed, "delete-topic": delete_topic,
}


if __name__ == "__main__":
    parsed = common.parser(__doc__).parse_args()
    common.run(lambda: COMMANDS[parsed.command](parsed))
    sys.exit(0)
