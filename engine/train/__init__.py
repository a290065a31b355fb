"""Training the transformer: data sources (including a synthetic corpus whose entropy rate is
known), optimizer steps, schedules and checkpoints."""
