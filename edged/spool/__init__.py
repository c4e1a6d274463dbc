"""Durable store-and-forward spool between acquisition and sinks."""
