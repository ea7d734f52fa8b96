"""Kafka plumbing shared by every process: the topic catalog, provisioning, client configs."""
