"""An MPI run's folder: what `phalanx audit` needs to verify the ranks' logs afterwards.

`mpiexec -n N phalanx node --real --transport mpi --data-dir 'runs/mpi/node-{node_id}'` gives
each rank its own data folder. At start the ranks gather each other's public keys over the
communicator (the job's ranks were started together by one operator, so it is trusted to
carry them once); rank 0 then writes, into the folder that holds the ranks' folders (the part
of `--data-dir` before `{node_id}`), `scenario.yaml` and `mpi.json`: every rank's id, public
key and data folder. The audit reads the keys from there, never a private key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from phalanx.net.crypto import PUBLIC_KEY_SIZE, Identity
from phalanx.scenario.schema import Scenario, ScenarioError

MPI_FILE = "mpi.json"
NODE_ID = "{node_id}"


def run_folder(data_dir_template: str) -> Path:
    """The folder above the first path part that names the rank (`runs/mpi/node-{node_id}`
    -> `runs/mpi`); one-line error if the template does not name it (every rank would share
    one key and one store)."""
    parts = Path(data_dir_template).parts
    named = [i for i, part in enumerate(parts) if NODE_ID in part]
    if not named:
        raise ScenarioError(f"data_dir {data_dir_template!r}: over MPI every rank needs its own "
                            f"folder: put {NODE_ID} in it (e.g. runs/mpi/node-{NODE_ID})")
    return Path(*parts[:named[0]]) if named[0] else Path(".")


def gather_ranks(comm: Any, identity: Identity, data_dir: Path, data_dir_template: str,
                 scenario: Scenario) -> dict[int, bytes]:
    """Every rank's public key, by rank; rank 0 writes the run folder's files."""
    folder = run_folder(data_dir_template)
    ranks = comm.allgather((identity.public_key, str(data_dir.resolve())))
    if comm.Get_rank() == 0:
        root = folder.resolve()
        entries = [{"id": rank, "public_key": key.hex(),
                    "data_dir": os.path.relpath(path, root)}
                   for rank, (key, path) in enumerate(ranks)]
        root.mkdir(parents=True, exist_ok=True)
        (root / "scenario.yaml").write_text(scenario.resolved_yaml())
        tmp = root / (MPI_FILE + ".tmp")
        tmp.write_text(json.dumps({"transport": "mpi", "ranks": entries}, indent=2) + "\n")
        os.replace(tmp, root / MPI_FILE)
    return {rank: key for rank, (key, _) in enumerate(ranks)}


def load_ranks(folder: Path) -> tuple[dict[int, bytes], dict[int, Path]]:
    """(rank -> public key, rank -> its SQLite log) from an MPI run's folder."""
    path = folder / MPI_FILE
    try:
        ranks = json.loads(path.read_text())["ranks"]
        keys = {int(r["id"]): bytes.fromhex(r["public_key"]) for r in ranks}
        stores = {int(r["id"]): folder / r["data_dir"] / "node.sqlite" for r in ranks}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ScenarioError(f"{path}: not an MPI run's rank list ({type(err).__name__})") \
            from None
    if any(len(key) != PUBLIC_KEY_SIZE for key in keys.values()):
        raise ScenarioError(f"{path}: a public key is not {PUBLIC_KEY_SIZE} bytes")
    return keys, {rank: store for rank, store in stores.items() if store.exists()}
