"""What a node is told about its run: `NodeConfig`, the same at every honest member (each
field a scenario setting; `scenario/build.py` makes one from a scenario file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    members: tuple[int, ...]
    rounds: int
    lr: float
    momentum: float
    round_timeout: float  # how long a leader waits for all gradients before settling for a quorum
    view_timeout: float  # how long a node waits in a view before moving to the next
    aggregator: str = "mean"
    aggregator_params: tuple[tuple[str, float | int | str], ...] = ()
    # applied in order: a name, or (name, ((param, value), ...)): ("nnm", ("bucketing", (("s", 3),)))
    pre_aggregation: tuple[str | tuple[str, tuple[tuple[str, float | int | str], ...]], ...] = ()
    # the Byzantine inputs the rule tolerates, capped by each membership's ⌊(n − 1)/3⌋; None:
    # that bound itself
    aggregator_f: int | None = None
    max_gradient_norm: float | None = None  # gradients with a larger L2 norm are invalid
    # votes go to the view's leader, which broadcasts each quorum it collects (O(n) messages
    # per phase instead of O(n^2), one more message delay): for large memberships
    votes_to_leader: bool = False
    # suspect crashed or silent members (engine/node/detector.py): the leader proposes without
    # them and a member missing from the last committed set does not lead
    detect_failures: bool = True
    # the least a leader holding a quorum waits for members it does not suspect (seconds): 0 in
    # simulation; a real node's wall clock has load spikes that are not failures, and proposing
    # without a member that was merely slow changes the round's set (and the model's hash)
    patience_floor: float = 0.0
    # honest workers send a momentum of their gradients instead of the gradient itself
    # (Karimireddy, He, Jaggi 2021: lower variance makes Byzantine vectors stand out)
    worker_momentum: float = 0.0
    # "adam": the node sends its own Adam direction (SenderAdam, beta1 = `momentum`) and the
    # shared step is SGD without momentum
    worker_optimizer: str = "none"
    optimizer: str = "sgd"  # "sgd" (heavy ball) or "adam" (`momentum` is its beta1)
    sync_batch: int = 16  # round records per sync response
    # once finished, compare our last commit with one peer's every this many seconds (default
    # two view timeouts): a fork that completed while a partition cut the members apart is
    # found once it heals, even if nobody has anything left to send
    audit_interval: float | None = None
    future_rounds: int = 2  # messages buffered ahead of the node's own round
    # a node this many rounds behind a peer fetches a checkpoint (verified by a commit
    # certificate and offered identically by f + 1 peers) instead of replaying every round
    checkpoint_gap: int = 32
    # committed rounds kept in memory (the newest ones): a peer syncing from older rounds is
    # served from the node's disk (a `Load`), and a restart reads back only these. Above
    # `checkpoint_gap + sync_batch`, so every peer that replays rounds is served from memory
    history_window: int = 256
    # non-voting followers (lightweight nodes, candidates): they may ask members for records
    # and checkpoints, and to join; a node whose own id is not among the members is one of them
    observers: tuple[int, ...] = ()
    # gradients on the wire (engine/compress): the method every member uses, its parameters,
    # and whether a sender carries its compression error into its next gradient
    compression: str = "none"
    compression_params: tuple[tuple[str, float | int | str], ...] = ()
    error_feedback: bool = True
    # (target seconds, min ratio, max ratio): top-k whose ratio each sender picks per gradient
    # from the link conditions its driver reports (engine/compress/adaptive.py)
    adaptive: tuple[float, float, float] | None = None
    feedback_decay: float = 1.0  # < 1: leaky error feedback (ErrorFeedback)
    # (clip, noise multiplier): each gradient clipped to that L2 norm, then Gaussian noise of
    # noise multiplier * clip added before it is released (engine/privacy.py)
    privacy: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.history_window < 1:  # a checkpoint or a joiner's first record is the last one
            raise ValueError(f"history_window must be at least 1, got {self.history_window}")
