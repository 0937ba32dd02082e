"""The hub: an embedded MQTT broker with TCP and WebSocket networks, and the dashboard."""

__version__ = "0.1.0"
