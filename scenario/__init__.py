"""The scenario: its schema (`schema`) and what a scenario builds for one node, its config, its
workload and the members' keys (`build`). Neutral ground: the simulator (`sim/`) and the real
node (`apps/node*`, `net/`) both read it, and it imports neither."""
