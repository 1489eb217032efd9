"""Where a cluster is and how to start one: the cluster directory format, sources, the embedded local cluster."""
