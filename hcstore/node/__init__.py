"""One node: the agent process, its local store over mountpaths, and its background maintenance.

``agent`` serves requests; ``store`` (with ``mountpath`` and ``index``) keeps fragments on disk;
``maintenance`` scans, repairs, rebalances and scrubs; ``repair_plan`` decides (pure) and
``repair`` carries out what an object needs.
"""
