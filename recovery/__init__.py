"""Checkpoint disaster recovery: nightly snapshots and replicas of each team's checkpoints, retention, restore."""
