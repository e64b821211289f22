"""Job outputs and checkpoints on a configured store: locations, browsing, retention, usage (docs/artifacts.md)."""
