"""Reading what the system recorded in Kafka: a conversation's records or a time range, decoded."""
