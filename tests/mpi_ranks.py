"""One MPI rank of a transport check: `mpiexec -n 4 python tests/mpi_ranks.py MODE OUTDIR`.

Every rank drives an `MpiTransport` from asyncio the way a real node drives TCP, then
writes OUTDIR/rank-<r>.json with what it saw; tests/test_net_mpi.py launches it and judges the
files. Modes:
- exchange: every rank sends every other rank frames of mixed sizes (0 B to 1 MiB);
- oversize: the same with a 100 kB max_frame, so some frames must be refused at the receiver;
- flood:    rank 0 offers rank 1 far more frames than its outstanding-send bound allows;
- shutdown: ranks idle (CPU measured), send, then close at staggered times;
- straggler: rank 1 sends a 1 MiB frame and closes long after the others gave up waiting for it
  (close timeout STRAGGLER_CLOSE): every rank must still leave, none hangs in MPI_Finalize.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the test imports this module for its constants; MPI starts only in run()
    from phalanx.net.mpi import MpiTransport

HEADER = struct.Struct(">HI")  # sender, sequence number: frames shorter than this carry none
SIZES = (0, 1, 6, 7, 100, 4096, 16383, 16384, 65535, 65537, 300_000, 1 << 20)
OVERSIZE_MAX = 100_000
FLOOD_FRAMES, FLOOD_SIZE, FLOOD_BOUND = 1000, 256 * 1024, 8
STRAGGLER_CLOSE, STRAGGLER_DELAY = 0.5, 1.0


def frame(sender: int, seq: int, size: int) -> bytes:
    if size < HEADER.size:
        return b"\xff" * size
    return HEADER.pack(sender, seq) + bytes([filler(sender, seq)]) * (size - HEADER.size)


def filler(sender: int, seq: int) -> int:
    return (sender * 31 + seq) % 251


def schedule(mode: str, sender: int, dest: int) -> list[int]:
    """Sizes of the frames `sender` sends `dest`, in order."""
    if mode == "oversize":  # small, then too large, then small again: later frames must pass
        return [100, 1 << 20, 7, 65537, 0, OVERSIZE_MAX + 1, OVERSIZE_MAX, 300_000, 6]
    count = 48 if mode == "exchange" else 12
    return [SIZES[(seq + 5 * sender + dest) % len(SIZES)] for seq in range(count)]


@dataclass
class Inbox:
    """Everything on_frame got, classified as it arrives."""

    by_sender: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # (seq, size)
    anonymous: list[int] = field(default_factory=list)  # sizes of header-less frames
    errors: list[str] = field(default_factory=list)

    def __call__(self, data: bytes) -> None:
        if len(data) < HEADER.size:
            self.anonymous.append(len(data))
            return
        sender, seq = HEADER.unpack_from(data)
        body = data[HEADER.size:]
        if body.count(filler(sender, seq)) != len(body):
            self.errors.append(f"frame {seq} from {sender}: corrupted body")
        self.by_sender.setdefault(sender, []).append((seq, len(data)))


def expected_from(mode: str, sender: int, rank: int, max_frame: int) -> list[tuple[int, int]]:
    return [(seq, size) for seq, size in enumerate(schedule(mode, sender, rank))
            if size <= max_frame]


def check_inbox(mode: str, inbox: Inbox, rank: int, size: int, max_frame: int) -> list[str]:
    errors = list(inbox.errors)
    anonymous: list[int] = []
    for sender in range(size):
        if sender == rank:
            continue
        expected = expected_from(mode, sender, rank, max_frame)
        headed = [item for item in expected if item[1] >= HEADER.size]
        anonymous += [s for _, s in expected if s < HEADER.size]
        got = inbox.by_sender.get(sender, [])
        if got != headed:
            errors.append(f"from {sender}: expected {len(headed)} frames in order, got "
                          f"{len(got)}; first difference at index {first_difference(got, headed)}")
    if sorted(inbox.anonymous) != sorted(anonymous):
        errors.append(f"header-less frames: expected sizes {sorted(anonymous)}, "
                      f"got {sorted(inbox.anonymous)}")
    return errors


def first_difference(got: list[tuple[int, int]], want: list[tuple[int, int]]) -> int:
    pairs = zip(got, want, strict=False)
    return next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(want)))


async def send_schedule(transport: MpiTransport, mode: str) -> None:
    """Interleave destinations and yield to the loop every few frames, so sends, receives and
    the poller overlap the way they do under a real node."""
    rank = transport.node_id
    plans = {dest: schedule(mode, rank, dest) for dest in transport.peers}
    for seq in range(max(len(p) for p in plans.values())):
        for dest, sizes in plans.items():
            if seq < len(sizes):
                transport.send(dest, frame(rank, seq, sizes[seq]))
        if seq % 5 == 4:
            await asyncio.sleep(0.001)


async def flood(transport: MpiTransport) -> dict[str, Any]:
    """Rank 0 offers rank 1 FLOOD_FRAMES fresh 256 KiB frames in one go, never yielding: only
    the bound keeps them from piling up in memory."""
    if transport.node_id != 0:
        return {}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    accepted: list[int] = []
    most_pending = 0
    for seq in range(FLOOD_FRAMES):
        drops = transport.dropped_full
        transport.send(1, frame(0, seq, FLOOD_SIZE))
        if transport.dropped_full == drops:
            accepted.append(seq)
        most_pending = max(most_pending, transport.pending(1)[0])
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"accepted": accepted, "most_pending": most_pending,
            "rss_growth_kib": rss_after - rss_before}


async def idle_then_send(transport: MpiTransport, mode: str) -> dict[str, Any]:
    """Measure what an idle rank costs in CPU, then send and leave at staggered times."""
    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.sleep(1.0)
    idle_cpu = (time.process_time() - cpu) / (time.monotonic() - wall)
    await send_schedule(transport, mode)
    await asyncio.sleep(0.3 * transport.node_id)
    return {"idle_cpu": idle_cpu}


def options(mode: str) -> dict[str, int]:
    if mode == "oversize":
        return {"max_frame": OVERSIZE_MAX}
    if mode == "flood":
        return {"max_pending": FLOOD_BOUND}
    return {}


async def run(mode: str, out: Path) -> None:
    from mpi4py import MPI

    from phalanx.net.mpi import MpiTransport

    comm = MPI.COMM_WORLD
    inbox = Inbox()
    opts = options(mode)
    transport = MpiTransport(comm, inbox, **opts)
    await transport.start()
    await transport.wait_for_peers(20.0)
    result: dict[str, Any] = {}
    match mode:
        case "exchange" | "oversize":
            await send_schedule(transport, mode)
        case "flood":
            result = await flood(transport)
        case "shutdown":
            result = await idle_then_send(transport, mode)
        case "straggler":
            if transport.node_id == 1:  # the others are in MPI_Finalize by now: nobody receives
                await asyncio.sleep(STRAGGLER_DELAY)
                transport.send(0, frame(1, 0, 1 << 20))
        case _:
            raise SystemExit(f"unknown mode {mode!r}; allowed: exchange, oversize, flood, "
                             "shutdown, straggler")
    wall, cpu = time.monotonic(), time.process_time()
    await transport.close(timeout=STRAGGLER_CLOSE if mode == "straggler" else 15.0)
    close_s = time.monotonic() - wall
    result.update(
        rank=transport.node_id, closed_cleanly=transport.closed_cleanly, close_s=close_s,
        close_cpu=(time.process_time() - cpu) / max(close_s, 1e-6),
        bytes_sent=transport.bytes_sent, bytes_received=transport.bytes_received,
        frames_received=transport.frames_received, dropped_full=transport.dropped_full,
        refused_large=transport.refused_large,
        received_seqs={s: [seq for seq, _ in got] for s, got in inbox.by_sender.items()})
    if mode not in ("flood", "straggler"):
        result["errors"] = check_inbox(mode, inbox, transport.node_id, comm.Get_size(),
                                       opts.get("max_frame", transport.max_frame))
    tmp = out / f"rank-{transport.node_id}.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out / f"rank-{transport.node_id}.json")


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], Path(sys.argv[2])))
