"""A tiny Faust app with a Table, run as a worker by test_faust.py.

It counts words from an input topic in a Table (in-memory store, so after a restart the
table exists only if Faust rebuilds it from its changelog topic) and publishes each new count.
Configured from the environment: FAUST_TEST_BROKER, FAUST_TEST_APP_ID, FAUST_TEST_DATADIR.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ.get("FAUST_TEST_APP_ID", "faust-table-test"),
    broker=f"kafka://{os.environ.get('FAUST_TEST_BROKER', '127.0.0.1:9092')}",
    store="memory://",
    datadir=os.environ.get("FAUST_TEST_DATADIR", "/tmp/faust-table-test"),
    topic_partitions=1,
    topic_replication_factor=1,
    web_enabled=False,
    broker_commit_every=1,
    broker_commit_interval=0.2,
)
words = app.topic(f"{app.conf.id}-words", key_type=str, value_type=str, partitions=1)
counts_out = app.topic(f"{app.conf.id}-counts", key_type=str, value_type=str, partitions=1)
counts = app.Table("counts", default=int, partitions=1)


@app.agent(words)
async def count_words(stream: faust.StreamT[str]) -> None:
    async for word in stream:
        counts[word] += 1
        await counts_out.send(key=word, value=str(counts[word]))


if __name__ == "__main__":
    app.main()
