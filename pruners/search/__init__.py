"""Mask searches and what follows them: Gem-Miner (hc_iter, hc), edge-popup, random /
Smart-Ratio masks, then the ticket's fine-tuning and sanity checks; upstream's flag-selected
only_sanity and mode_connect runs."""
