"""What the Python drivers (confluent.py, kafka_python.py) share with each other and with
tests/clients/node/kafka.js: the command line, the records they produce and the JSON lines
they print. The Rust tests (tests/src/kafka_scenario.rs) read those lines, so every driver
prints the same events with the same fields.

Values are ``TAG-KEY-SEQ`` (SEQ counts per key from 0), so a consumer can check per-key
order; every record also carries the headers ``tag`` and ``seq``.
"""

import argparse
import json
import sys
import threading
import time


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("command", choices=[
        "metadata", "create-topic", "produce", "offsets", "group", "consume", "committed",
        "delete-topic",
    ])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic")
    p.add_argument("--partitions", type=int)
    p.add_argument("--records", type=int)
    p.add_argument("--keys", type=int, default=3)
    p.add_argument("--tag")
    p.add_argument("--acks", default="-1")
    p.add_argument("--idempotent", action="store_true")
    p.add_argument("--compression", default="none")
    p.add_argument("--per-send", type=int, default=5)
    p.add_argument("--group")
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--end", type=partition_map)
    p.add_argument("--commit", type=partition_map, default={})
    p.add_argument("--group-protocol", default="classic", choices=["classic", "consumer"])
    p.add_argument("--timeout-ms", type=int, default=60000)
    p.add_argument("--debug", action="store_true", help="the client's protocol debug log on stderr")
    return p


def partition_map(text):
    """``0:5,1:7`` -> {0: 5, 1: 7}"""
    result = {}
    for item in filter(None, text.split(",")):
        partition, offset = item.split(":")
        result[int(partition)] = int(offset)
    return result


def need(args, *names):
    for name in names:
        if getattr(args, name.replace("-", "_")) is None:
            sys.exit(f"--{name} is required for {args.command}")


_emit_lock = threading.Lock()


def emit(event, **fields):
    line = json.dumps({"event": event, **fields}, sort_keys=True) + "\n"
    # Group members print from their own threads: one whole line at a time.
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def records(args):
    """The records a produce run sends, in order: (key, value, headers)."""
    sequence = {}
    for i in range(args.records):
        key = f"k{i % args.keys}"
        seq = sequence.get(key, 0)
        sequence[key] = seq + 1
        yield key, f"{args.tag}-{key}-{seq}", [("tag", args.tag.encode()), ("seq", str(seq).encode())]


def text(data):
    return None if data is None else data.decode()


def headers_dict(headers):
    return {name: text(value) for name, value in (headers or [])}


class Deadline:
    def __init__(self, timeout_ms):
        self.at = time.monotonic() + timeout_ms / 1000

    def check(self, what):
        if time.monotonic() > self.at:
            raise TimeoutError(f"timed out waiting for {what}")


class GroupProgress:
    """What the members of a `group` run have seen, committed and been assigned; `settled`
    says when every offset below --end was seen by some member, every commit target was
    committed and every member owns partitions, together all of them."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.end = args.end
        self.targets = args.commit
        self.members = args.members
        self.seen = {partition: set() for partition in self.end}
        self.committed = {}
        self.assignments = {}

    def consumed(self, member, partition, offset, key, value, headers):
        emit("consumed", member=member, partition=partition, offset=offset, key=key, value=value,
             headers=headers)
        with self.lock:
            if partition in self.seen:
                self.seen[partition].add(offset)

    def commit_target(self, partition, offset):
        """The offset to commit after the message at `offset`, or None."""
        target = self.targets.get(partition)
        if target is not None and offset + 1 <= target:
            return offset + 1
        return None

    def committed_one(self, member, partition, offset):
        with self.lock:
            self.committed[partition] = offset
        emit("commit", member=member, partition=partition, offset=offset)

    def assigned(self, member, partitions):
        partitions = sorted(partitions)
        with self.lock:
            changed = self.assignments.get(member) != partitions
            self.assignments[member] = partitions
        if changed:
            emit("joined", member=member, partitions=partitions)

    def settled(self):
        with self.lock:
            return self._settled()

    def _settled(self):
        for partition, high in self.end.items():
            if any(offset not in self.seen[partition] for offset in range(high)):
                return False
        for partition, target in self.targets.items():
            if target > 0 and self.committed.get(partition) != target:
                return False
        if len(self.assignments) != self.members:
            return False
        owned = list(self.assignments.values())
        if any(not partitions for partitions in owned):
            return False
        return sorted(p for partitions in owned for p in partitions) == sorted(self.end)


def run_group(args, progress, open_member, poll_member, close_member):
    """Runs --members group members, each on its own thread as an application would (a
    consumer is not shared between threads), until `progress` has settled or the deadline;
    then each member closes its consumer. A member's exception fails the run."""
    deadline = Deadline(args.timeout_ms)
    stop = threading.Event()
    failures = []

    def member_thread(member):
        try:
            consumer = open_member(member)
        except Exception as error:
            failures.append(error)
            return
        try:
            while not stop.is_set():
                poll_member(progress, member, consumer)
        except Exception as error:
            failures.append(error)
        finally:
            close_member(consumer)

    threads = [threading.Thread(target=member_thread, args=(f"m{m}",), daemon=True)
               for m in range(args.members)]
    for thread in threads:
        thread.start()
    try:
        while not progress.settled():
            if failures:
                raise failures[0]
            deadline.check("the group to consume everything and settle")
            time.sleep(0.02)
        emit("settled", assignments=progress.assignments)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    if failures:
        raise failures[0]


def run(main):
    """Runs `main()`; an exception becomes an `error` event and exit status 1."""
    try:
        main()
    except Exception as error:  # the test reads the event; the traceback goes to stderr
        emit("error", message=str(error), name=type(error).__name__)
        import traceback
        traceback.print_exc()
        sys.exit(1)
