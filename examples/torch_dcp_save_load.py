"""Save a model and its optimizer with torch.distributed.checkpoint to hcstore://, lose 2 agents, load it back.

    python examples/torch_dcp_save_load.py                       # starts (and removes) a local cluster
    python examples/torch_dcp_save_load.py --cluster DIR         # uses a running cluster (`hcstore up`)
    python examples/torch_dcp_save_load.py --cluster tcp://head:7480

With its own cluster (6 agents, EC 4+2, durability "commit") the example
SIGKILLs ``m`` = 2 agents after the save, so the load below is a degraded read:
hcstore decodes the missing fragments from parity. With ``--cluster`` it kills
nothing. Either way every tensor loaded must equal the one saved, bit for bit.

DCP runs in a single process here (no process group: it warns and writes one
rank's files). ``sync_files=False``: an hcstore file is committed, fsynced on
``k+m`` nodes, when it is closed, so DCP's own fsync (a machine-wide
``os.sync()`` for files without a descriptor) would only cost time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter  # not exported in 2.13
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from hcstore.cluster.local import LocalCluster

URL = "hcstore://checkpoints/dcp-example/step-000100"


def make_model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small MLP and its AdamW optimizer, one training step in (so the optimizer has state)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Embedding(1000, 128),
        torch.nn.Flatten(),
        torch.nn.Linear(128 * 8, 512),
        torch.nn.GELU(),
        torch.nn.LayerNorm(512),
        torch.nn.Linear(512, 10),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 1000, (16, 8))
    torch.nn.functional.cross_entropy(model(tokens), torch.randint(0, 10, (16,))).backward()
    optimizer.step()
    return model, optimizer


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every tensor of the model and optimizer state, flattened by name and cloned."""
    model_state, optim_state = get_state_dict(model, optimizer)
    flat = {f"model.{k}": v.detach().clone() for k, v in model_state.items()}
    for param, state in optim_state["state"].items():
        flat.update({f"optim.{param}.{k}": v.detach().clone() for k, v in state.items() if isinstance(v, torch.Tensor)})
    return flat


def save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, options: dict[str, str]) -> None:
    """Save the model and optimizer state to :data:`URL` with DCP (``options`` go to the hcstore filesystem)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save(
        {"model": model_state, "optim": optim_state}, storage_writer=FsspecWriter(URL, sync_files=False, **options)
    )


def load(model: torch.nn.Module, optimizer: torch.optim.Optimizer, options: dict[str, str]) -> None:
    """Load the state saved at :data:`URL` into ``model`` and ``optimizer`` in place, with DCP."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, storage_reader=FsspecReader(URL, **options))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def compare(saved: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> list[str]:
    """Names of tensors that differ (or are missing) after the round trip."""
    return [name for name, tensor in saved.items() if name not in loaded or not torch.equal(loaded[name], tensor)]


def run(cluster_arg: str | None) -> bool:
    """Save, (kill 2 agents,) load into a differently initialised model and compare; True when identical."""
    with tempfile.TemporaryDirectory(prefix="hcstore-dcp-example-") as tmp:
        own = None
        if cluster_arg is None:
            own = LocalCluster.create(Path(tmp) / "cluster", agents=6, ec="4+2", durability="commit")
            own.start()
            cluster_arg = str(own.path)
            print(f"started a local cluster at {cluster_arg}: 6 agents, EC 4+2")
        options = {"cluster": cluster_arg}
        try:
            model, optimizer = make_model(seed=1)
            saved = snapshot(model, optimizer)
            started = time.perf_counter()
            save(model, optimizer, options)
            size = sum(t.numel() * t.element_size() for t in saved.values())
            print(
                f"saved {len(saved)} tensors ({size / 2**20:.1f} MiB) to {URL} in {time.perf_counter() - started:.2f} s"
            )
            if own is not None:
                for node in ("n1", "n2"):
                    own.kill(node)
                print("SIGKILLed agents n1 and n2 (m = 2 of 6): the load below decodes from parity")
            fresh, fresh_optimizer = make_model(seed=2)
            assert compare(saved, snapshot(fresh, fresh_optimizer)), "the fresh model should start different"
            started = time.perf_counter()
            load(fresh, fresh_optimizer, options)
            print(f"loaded it back in {time.perf_counter() - started:.2f} s")
            differ = compare(saved, snapshot(fresh, fresh_optimizer))
        finally:
            if own is not None:
                own.destroy()
    if differ:
        print(f"FAILED: {len(differ)} tensors differ, e.g. {differ[:3]}")
        return False
    print(f"OK: all {len(saved)} tensors (model and AdamW state) are identical after the round trip")
    return True


def main() -> int:
    """Parse the command line and run the example; returns 0 when every tensor came back identical."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cluster", default=None, help="a running cluster (directory or tcp://controller:port); default: start one"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    return 0 if run(args.cluster) else 1


if __name__ == "__main__":
    raise SystemExit(main())
