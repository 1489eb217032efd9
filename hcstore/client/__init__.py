"""The client side of the data path: put, get, stream, delete, list and stat over a cluster of agents.

``client`` is the public :class:`~hcstore.client.client.Client`; ``writer`` and ``reader`` run one
put or one read; ``upload`` is the one component that stores fragments on agents (used by
writers and by repair) and ``headers`` the one place that builds fragment headers (puts, repairs,
deletes); ``versions`` finds the newest version of an object.
"""
