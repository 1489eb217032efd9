"""hcstore on Ray: agent and controller actors, object-ref reads from the caller's node, Ray Data.

Example::

    import ray, ray_integration

    ray.init()
    store = ray_integration.deploy(mountpaths=["/nvme0/hcstore/{node_id}"], ec="4+2")
    store.put("weights", np.ones((1024, 1024)))
    ray.get(store.get_ref("weights"))          # a zero-copy view, assembled on this node
"""

from ray_integration.data import HCStoreDatasink, HCStoreDatasource, read_hcstore
from ray_integration.deploy import attach, deploy, shutdown
from ray_integration.handle import HCStore
from ray_integration.lookup import status
from ray_integration.train import (
    HCStoreCheckpointCallback,
    checkpoint_dir_name,
    latest_checkpoint,
    storage_filesystem,
)

__all__ = [
    "HCStore",
    "HCStoreCheckpointCallback",
    "HCStoreDatasink",
    "HCStoreDatasource",
    "attach",
    "checkpoint_dir_name",
    "deploy",
    "latest_checkpoint",
    "read_hcstore",
    "shutdown",
    "status",
    "storage_filesystem",
]
