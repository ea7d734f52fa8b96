"""A single-node, Kafka-compatible broker for one machine (development and tests)."""
