"""Sinks: where samples go from the spool (local JSON lines, MQTT, Sparkplug B)."""
