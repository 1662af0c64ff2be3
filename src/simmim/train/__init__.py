"""Training: one loop for every objective (private and non-private), checkpoints, schedules."""
