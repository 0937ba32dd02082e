"""The hub's HTTP side: dashboard pages, browser libraries and the MQTT-over-WebSocket network."""
