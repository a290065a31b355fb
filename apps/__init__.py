"""Entry points: the `phalanx` CLI, the scenario runner, real drivers and benchmarks."""
