"""The ``hcstore agent`` and ``hcstore controller`` verbs: one daemon in the foreground.

``hcstore agent --config agent.toml`` runs the agent that the file describes (settings of
:class:`hcstore.config.AgentConfig`), ``hcstore controller --config controller.toml`` the
controller (:class:`hcstore.config.ControllerConfig`), exactly as
``python -m hcstore.node.agent --config ...`` and ``python -m hcstore.control.controller
--config ...`` do: logs on standard error (or the configured ``log_file``), a clean stop and
exit status 0 on SIGTERM or SIGINT, one line and status 1 on a bad config.
"""

from __future__ import annotations

import argparse
from typing import Any

from hcstore import daemon

VERBS = {
    "agent": "run one agent (a node's store) in the foreground from a TOML config file",
    "controller": "run the controller (the cluster map) in the foreground from a TOML config file",
}


def add_verbs(sub: Any) -> None:
    """Register ``agent`` and ``controller`` on the ``hcstore`` parser's subcommands."""
    for name, text in VERBS.items():
        verb: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
        daemon.add_arguments(verb)
        verb.set_defaults(func=cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the daemon named by the verb until SIGTERM or SIGINT; errors are raised as HCStoreError."""
    if args.command == "agent":
        from hcstore.config import AgentConfig
        from hcstore.node.agent import Agent

        return daemon.run(AgentConfig, Agent, args.config, log_file=args.log_file, log_format=args.log_format)
    from hcstore.config import ControllerConfig
    from hcstore.control.controller import Controller

    return daemon.run(ControllerConfig, Controller, args.config, log_file=args.log_file, log_format=args.log_format)
