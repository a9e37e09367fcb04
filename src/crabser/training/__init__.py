"""Training: the training objectives, data loading from the feature store, Lightning module and
runner."""
