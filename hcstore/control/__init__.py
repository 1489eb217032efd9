"""The control plane: the controller process that owns the cluster map, and membership (pure)."""
