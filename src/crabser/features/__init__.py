"""Encoders (speech, text), the on-disk feature store and batch extraction."""
