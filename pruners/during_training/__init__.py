"""Pruning while the network trains: gradual magnitude pruning on a polynomial schedule
(gradual.py) and early-bird tickets drawn once the masks stop changing (early_bird.py)."""
