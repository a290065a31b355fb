"""RLHF on the BFT core: preferences from committed curation data, a reward model, PPO and
DPO, each trained in BFT rounds, with a lineage from preferences to policy (docs/rlhf.md)."""
