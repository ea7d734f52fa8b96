"""WebSocket gateway: reps' clients in, suggestions out, Kafka behind."""
