"""vpsearch: hyperparameter search with experiment tracking for conditional-VAE video prediction."""

__version__ = "0.1.0"
