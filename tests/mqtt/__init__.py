"""The MQTT 3.1.1 protocol suite, by family, against the real hub."""
