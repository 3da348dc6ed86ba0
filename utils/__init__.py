"""Shared infrastructure: training loop, schedules, checkpoints, logging, run directories."""
