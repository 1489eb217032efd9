"""Command-line tools: the ``hcstore`` CLI, the demo and the benchmark."""
