"""Data curation: annotation tasks, signed annotation records and their replicated log,
assignment, label aggregation, reputation and agreement metrics (sans-IO, deterministic)."""
