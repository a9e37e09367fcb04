"""Manifests, audio decoding, corpus adapters and evaluation protocols."""
