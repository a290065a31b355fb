"""The interactive console of a real node attached to a terminal: `stats`, `peers`, `train`,
`test`, `help`, `quit`. Each command reads the node's status (the same dictionary the HTTP
endpoint serves) and answers in a few lines; nothing here changes the protocol's state (`join`
and `leave`, which do, are handled by the node itself, as `quit` is)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HELP = ("commands: stats (round, model hash, health), peers (reachability and reputation), "
        "train (training progress), test (evaluate the current model on the held-out set), "
        "join / leave (ask the members to admit this node or let it go), quit (stop gracefully)")


def answer(line: str, status: dict[str, Any], evaluate: Callable[[], dict[str, float]]) -> str:
    """The console's reply to one line; `quit` is handled by the caller."""
    command = line.strip().lower()
    if command == "stats":
        h = status["health"]
        return (f"node {status['node_id']} ({status['node_type']}) round {status['round']} "
                f"view {status['view']} model {status['model_hash'][:16]} | "
                f"{status['peers_up']}/{len(status['peers'])} peers up | health {h['status']}"
                + (f" ({'; '.join(h['reasons'])})" if h["reasons"] else ""))
    if command == "peers":
        rows = [f"{'peer':>4}  {'up':<5} {'address':<22} {'reputation':>10}  excluded"]
        for p in status["peers"]:
            rows.append(f"{p['id']:>4}  {p['up']!s:<5} {p['address']:<22} "
                        f"{p['reputation']:>10.2f}  {p['excluded']}")
        return "\n".join(rows)
    if command == "train":
        return _train(status)
    if command == "test":
        metrics = evaluate()
        return "held-out " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
    if command in ("help", "?", ""):
        return HELP
    return f"unknown command {command!r}; {HELP}"


def _train(status: dict[str, Any]) -> str:
    """Training progress, the rounds restored from the node's store included: a restarted
    node reports its past, and says so when its last loss is not known."""
    t = status["training"]
    restored = t.get("rounds_restored", 0)
    rounds = f"committed {t['rounds_committed']} of {t['rounds']} rounds"
    if restored:
        rounds += (f" ({restored} restored from the store, "
                   f"{t.get('rounds_committed_this_run', 0)} since the restart)")
    if t["last_train_loss"] is not None:
        loss = f"last train loss {t['last_train_loss']:.4f}" + (
            " (from the store)" if t.get("last_train_loss_from") == "store" else "")
    elif restored:
        loss = "last train loss not recorded before the restart"
    else:
        loss = "last train loss -"
    return f"{rounds}; {loss}; {'finished' if status['finished'] else 'training'}"
