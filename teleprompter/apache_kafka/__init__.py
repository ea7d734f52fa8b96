"""Real Apache Kafka on this machine: pinned Maven artifacts, run as a KRaft cluster on loopback.

What `teleprompter kafka up` runs, what the test suite's `apache` backend starts, and what the
fault tests drive: `cluster.ApacheKafkaCluster` (kill, restart and wait on single nodes).
`artifacts` fetches and caches the jars; `commands` is the `teleprompter kafka` CLI group, kept
free of heavy imports so that every other command starts fast.
"""
