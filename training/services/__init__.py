"""Writes for training: runs (training.services.runs), reward models and scoring (training.services.scoring)."""
