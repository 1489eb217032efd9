"""``HCStore``: the handle a Ray task or actor uses to put, get and read objects as object refs.

The handle is two strings (the controller's endpoint and a bucket), so it pickles
for nothing and travels with every task. Each process that uses it makes one
:class:`hcstore.Client` on first use; bytes move over ZeroMQ between that
process and the agents, never through the Ray object store, except for
:meth:`HCStore.get_ref`, whose whole point is to land the value in the object
store of the caller's own node.

Example::

    store = ray_integration.deploy(mountpaths={"default": ["/nvme0/hcstore", "/nvme1/hcstore"]})

    @ray.remote
    def train_shard(store, i):
        weights = ray.get(store.get_ref("weights/latest"))    # a zero-copy numpy view
        ...
        store.put(f"grads/{i}", grads)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from hcstore.client.client import Client, ObjectInfo
from hcstore.client.writer import PutResult
from hcstore.filesystem import HCStoreFileSystem
from ray_integration.layout import NAMESPACE, agent_name, node_id_for
from ray_integration.lookup import any_agent
from ray_integration.objects import client_for, job_credentials, read_value, write_value

_local_agents: dict[str, Any] = {}


@dataclass(frozen=True)
class HCStore:
    """A handle on an hcstore deployment; cheap to pickle and pass to tasks.

    Args:
        controller: the controller's endpoint, ``"tcp://ip:port"``.
        bucket: the bucket keys are read from and written to.
    """

    controller: str
    bucket: str = "ray"

    def with_bucket(self, bucket: str) -> HCStore:
        """The same deployment, another bucket."""
        return HCStore(self.controller, bucket)

    @property
    def client(self) -> Client:
        """This process's :class:`hcstore.Client` of the deployment (reads prefer this node)."""
        return client_for(self.controller, (("local_node", _this_node()),) if ray.is_initialized() else ())

    def filesystem(self, **settings: Any) -> HCStoreFileSystem:
        """An ``hcstore://`` fsspec filesystem of the deployment, with the job's key (``settings``:
        :class:`hcstore.config.ClientConfig` fields, e.g. ``ec="8+2"``). It pickles into tasks."""
        return HCStoreFileSystem(self.controller, credentials=job_credentials(), **settings)

    def put(self, key: str, value: Any, *, allow_pickle: bool = False) -> PutResult:
        """Store bytes, a numpy array, an Arrow table, or the value of an ``ObjectRef`` that is one.

        Any other value only with ``allow_pickle=True``: it is pickled and signed with the
        cluster secret, and read back only with ``get(key, allow_pickle=True)``.
        Returns when the object is committed on ``k+m`` nodes (or on the write quorum,
        then ``degraded``): it survives the loss of ``m`` nodes from that moment.

        Raises:
            UnsupportedValue: a value that needs pickle, and ``allow_pickle`` is False.
        """
        if isinstance(value, ray.ObjectRef):
            value = ray.get(value)
        return write_value(self.client, self.bucket, key, value, allow_pickle=allow_pickle)

    def get(self, key: str, *, allow_pickle: bool = False) -> Any:
        """The stored value, read by this process straight from the agents (numpy arrays come back whole).

        A pickled value is unpickled only with ``allow_pickle=True``, and only if it was signed
        with the cluster secret for this key.

        Raises:
            ObjectNotFound: no such key.
            UntrustedValue: a pickle not allowed, unsigned, or whose signature does not verify.
        """
        return read_value(self.client, self.bucket, key, allow_pickle=allow_pickle)

    def get_ref(self, key: str, *, allow_pickle: bool = False) -> ray.ObjectRef:
        """An ``ObjectRef`` to the value, assembled by the agent on the caller's own node.

        ``ray.get`` of it returns numpy arrays as zero-copy, read-only views into this
        node's object store. A missing key raises ``ObjectNotFound`` from ``ray.get``; a
        pickle raises ``UntrustedValue`` unless ``allow_pickle`` and its signature verifies.
        """
        return _local_agent().read.remote(self.bucket, key, allow_pickle=allow_pickle)

    def delete(self, key: str) -> None:
        """Delete the object (a tombstone is written on its placement nodes).

        Raises:
            ObjectNotFound: no such key.
        """
        self.client.delete(self.bucket, key)

    def exists(self, key: str) -> bool:
        """True when the key has a readable, not deleted, version."""
        return self.client.exists(self.bucket, key)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects under ``prefix`` in this handle's bucket, in key order."""
        return self.client.list(self.bucket, prefix)


def _this_node() -> str:
    return node_id_for(ray.get_runtime_context().get_node_id())


def _local_agent() -> Any:
    """The agent actor of this Ray node; any agent of the deployment if this node has none yet."""
    ray_node_id = ray.get_runtime_context().get_node_id()
    handle = _local_agents.get(ray_node_id)
    if handle is None:
        try:
            handle = ray.get_actor(agent_name(ray_node_id), namespace=NAMESPACE)
        except ValueError:
            return any_agent()  # not cached: this node's own agent may be starting
        _local_agents[ray_node_id] = handle
    return handle
