"""crabser: speech emotion recognition from speech and its transcript (Crab + MLCS and related
methods)."""

__version__ = "0.1.0"
