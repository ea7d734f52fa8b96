"""A single-node, Kafka-compatible broker for one machine (development and tests)."""

from broker.runner import BrokerThread, serve_until_signalled
from broker.server import EmbeddedBroker

__all__ = ["BrokerThread", "EmbeddedBroker", "serve_until_signalled"]
