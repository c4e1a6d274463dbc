"""Upstream plumbing shared by the MQTT and Sparkplug sinks: command gate and sink metrics."""
