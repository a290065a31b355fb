"""Quorum arithmetic, in integers only."""

from __future__ import annotations


def quorum(n: int) -> int:
    """Smallest k with 3·k > 2·n. Two such sets of n members share more than n/3 members, so
    with f < n/3 faulty they share an honest one. (ceil(2n/3) is one short when 3 divides n:
    n = 6 needs 5 votes, not 4.)"""
    if n < 1:
        raise ValueError(f"a membership needs at least one member (got n = {n})")
    return 2 * n // 3 + 1


def max_faulty(n: int) -> int:
    """Largest f with 3·f < n: the Byzantine members a membership of n tolerates."""
    if n < 1:
        raise ValueError(f"a membership needs at least one member (got n = {n})")
    return (n - 1) // 3
