"""Broker protocol tests (MQTT 3.1.1), by family, against the real hub."""
