"""hcstore on Ray: agent and controller actors, object-ref reads from the caller's node, Ray Data.

Example::

    import ray, ray_integration

    ray.init()
    store = ray_integration.deploy(mountpaths=["/nvme0/hcstore/{node_id}"], ec="4+2")
    store.put("weights", np.ones((1024, 1024)))
    ray.get(store.get_ref("weights"))          # a zero-copy view, assembled on this node
"""

from ray_integration.data import HCStoreDatasink, HCStoreDatasource, read_hcstore
from ray_integration.deploy import attach, deploy, shutdown, status
from ray_integration.handle import HCStore

__all__ = ["HCStore", "HCStoreDatasink", "HCStoreDatasource", "attach", "deploy", "read_hcstore", "shutdown",
           "status"]
