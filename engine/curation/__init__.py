"""Data curation: annotation tasks, assignment, label aggregation, reputation and agreement
metrics, all sans-IO and deterministic so every node derives the same labels from the same
committed records."""
