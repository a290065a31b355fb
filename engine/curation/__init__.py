"""Data curation: annotation tasks, signed annotation records and their replicated log,
assignment, label aggregation and agreement metrics, all sans-IO and deterministic so every
node derives the same labels from the same committed records."""
