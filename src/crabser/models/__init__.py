"""Models: building blocks and the Crab cross-modal transformer."""
