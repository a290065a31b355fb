"""One-shot key and members setup for a container deployment (the compose file's `init`).

For every consensus member given as `--member ID DATA_DIR HOST:PORT` it runs
`phalanx keygen DATA_DIR` (which creates DATA_DIR/node.key once and prints the public key),
then writes the members file that every node loads with `--members`. Running it again keeps
the existing keys and rewrites the same file, so it is safe on every `docker compose up`.

With `--chown UID:GID` (the compose file runs it as root) the data folders and their keys are
handed to the user the nodes run as: a named volume first mounted here is created root-owned.

    python deploy/init_members.py --members OUT/members.json \
        --member 0 DATA0 full:7000 --member 1 DATA1 training-1:7000 ...
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from phalanx.apps.node_settings import load_members, parse_address, write_members
from phalanx.scenario.schema import ScenarioError

HEX_KEY = re.compile(r"[0-9a-f]{64}")


class InitError(Exception):
    """A setup step that failed; the message is one line."""


def keygen(data_dir: Path) -> bytes:
    """The member's public key, from `phalanx keygen` (the key is created on the first call)."""
    done = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "keygen", str(data_dir)],
                          capture_output=True, text=True, check=False)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines or not HEX_KEY.fullmatch(lines[-1]):
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise InitError(f"phalanx keygen {data_dir} failed: {why}")
    return bytes.fromhex(lines[-1])


def owner(text: str) -> tuple[int, int]:
    uid, sep, gid = text.partition(":")
    if not (uid.isdigit() and sep and gid.isdigit()):
        raise InitError(f"--chown {text!r} is not UID:GID (numbers)")
    return int(uid), int(gid)


def hand_over(data_dir: Path, uid: int, gid: int) -> None:
    """Give the data folder and everything in it to the nodes' user."""
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


def init(members_path: Path, specs: list[list[str]], chown: str | None) -> None:
    if not specs:
        raise InitError("no --member given")
    uid_gid = owner(chown) if chown is not None else None
    members: dict[int, tuple[bytes, tuple[str, int]]] = {}
    for node_id, data_dir, address in specs:
        if not node_id.isdigit():
            raise InitError(f"--member {node_id!r}: the id is a number (0..n-1)")
        if int(node_id) in members:
            raise InitError(f"--member {node_id} is given twice")
        try:
            host_port = parse_address(address, f"--member {node_id}")
        except ScenarioError as err:
            raise InitError(str(err)) from None
        members[int(node_id)] = (keygen(Path(data_dir)), host_port)
        if uid_gid is not None:
            hand_over(Path(data_dir), *uid_gid)
    if sorted(members) != list(range(len(members))):  # the scenario's members, no observers
        raise InitError(f"member ids must be 0..n-1, got {sorted(members)}")
    members_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = members_path.with_name(members_path.name + ".tmp")
    write_members(tmp, members)
    try:
        load_members(tmp)  # the nodes' own check: keys, addresses
    except ScenarioError as err:
        tmp.unlink()
        raise InitError(str(err)) from None
    os.replace(tmp, members_path)  # a node restarting now reads the old file or the new one
    os.chmod(members_path, 0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=Path, required=True, help="members.json to write")
    parser.add_argument("--member", nargs=3, action="append", default=[],
                        metavar=("ID", "DATA_DIR", "HOST:PORT"), help="one consensus member")
    parser.add_argument("--chown", metavar="UID:GID", help="owner of the data folders")
    args = parser.parse_args(argv)
    try:
        init(args.members, args.member, args.chown)
    except (InitError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.members}: {len(args.member)} members")
    return 0


if __name__ == "__main__":
    sys.exit(main())
