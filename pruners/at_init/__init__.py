"""Pruning at initialisation: SNIP, GraSP, SynFlow, magnitude and random / ERK scores
(scores.py), and the algorithms that prune once before training, then train the ticket and its
controls (run.py)."""
