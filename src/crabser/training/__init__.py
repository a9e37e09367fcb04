"""Training: the MLCS objective, data loading from the feature store, Lightning module and runner."""
