#!/usr/bin/env python3
"""Producer and reader of Kafka test messages for KafkaEventsTests (confluent-kafka, the
librdkafka 2.16 of its wheel: Debian's 2.0.2 cannot talk to Tansu, docs/events.md).

  kafka_tool.py produce BROKERS TOPIC     stdin: one message a line, hex-encoded; acks=all,
                                          exits 0 once every message is acknowledged
  kafka_tool.py read BROKERS TOPIC COUNT SECONDS
                                          prints one JSON object a message (partition, offset,
                                          value_hex, headers) until COUNT were read or SECONDS
                                          passed; reads from the beginning, commits nothing
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def produce(brokers, topic):
    p = Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5})
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))

    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        while True:
            try:
                p.produce(topic, bytes.fromhex(line), on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
    left = p.flush(20)
    if failed or left:
        print(f"produce: {len(failed)} failed ({failed[:3]}), {left} not acknowledged", file=sys.stderr)
        sys.exit(1)
    print(n)


def read(brokers, topic, count, seconds):
    c = Consumer({"bootstrap.servers": brokers, "group.id": "kafka-tool-reader", "enable.auto.commit": False})
    # assign() needs no group join: partitions from the metadata, every one from offset 0.
    meta = c.list_topics(topic, timeout=10)
    parts = sorted(meta.topics[topic].partitions.keys())
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    got = 0
    deadline = time.time() + seconds
    while got < count and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        headers = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (m.headers() or [])}
        print(json.dumps({"partition": m.partition(), "offset": m.offset(), "value_hex": m.value().hex(), "headers": headers}), flush=True)
        got += 1
    c.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
