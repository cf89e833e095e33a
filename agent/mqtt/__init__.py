"""The MQTT mirror and the fleet view."""
