"""Event types crossing Kafka, their Avro schemas and the single-object codec."""
