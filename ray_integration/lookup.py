"""Finding the running deployment's actors by name: the controller, its status, a serving agent.

Kept apart from :mod:`ray_integration.deploy` so that the handle, which looks up agents
from inside tasks, and deploy, which builds handles, do not import each other.
"""

from __future__ import annotations

from typing import Any

import ray

from hcstore.errors import AgentUnavailable, ClusterNotFound
from ray_integration.layout import CONTROLLER_NAME, NAMESPACE, agent_name


def status() -> dict[str, Any]:
    """The controller's view: agents by Ray node id, the cluster map and recent events."""
    return ray.get(controller_actor().status.remote())


def credentials(role: str = "client") -> Any:
    """A ``client`` or ``admin`` key pair of the deployment and the controller's public key, as
    ``(Credentials, str)`` for :class:`hcstore.client.client.Client` and
    :class:`hcstore.control.client.ControllerClient` (handed over through Ray, never written here)."""
    return ray.get(controller_actor().credentials.remote(role))


def any_agent() -> Any:
    """Some serving agent actor of the deployment (for a node that has none yet)."""
    for ray_node_id, ready in status()["agents"].items():
        if ready:
            return ray.get_actor(agent_name(ray_node_id), namespace=NAMESPACE)
    raise AgentUnavailable("no hcstore agent is serving on this Ray cluster yet: `hcstore ray status` shows the agents")


def controller_actor() -> Any:
    """The deployment's controller actor.

    Raises:
        ClusterNotFound: hcstore is not deployed on the connected Ray cluster.
    """
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        raise ClusterNotFound(
            "hcstore is not deployed on this Ray cluster: run ray_integration.deploy() or `hcstore ray deploy`"
        ) from None
