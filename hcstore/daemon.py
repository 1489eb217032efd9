"""Running one daemon (an agent or the controller) in the foreground from its config file.

Both ``hcstore agent --config FILE`` and ``python -m hcstore.node.agent --config FILE`` (and
the same for the controller) come here: the config is loaded with
:meth:`hcstore.config._Settings.load` (file, then ``HCSTORE_*`` variables, then ``--log-file`` and
``--log-format``), the process logs to the configured ``log_file`` or standard error, as text or
one JSON object per line (``log_format``), and ``SIGTERM``/``SIGINT``
stop it cleanly with exit status 0. A config or start-up problem is one line on standard
error and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

from hcstore.config import LOG_FORMATS, AgentConfig, ControllerConfig
from hcstore.errors import HCStoreError, InvalidRequest, StartFailed
from hcstore.metrics import logs

DaemonConfig = type[AgentConfig] | type[ControllerConfig]


class Daemon(Protocol):
    """What :func:`run` needs of a daemon: serve until stopped."""

    def serve(self, *, ready_file: str | None = None) -> None:
        """Serve until :meth:`stop`, writing ``ready_file`` once serving."""

    def stop(self) -> None:
        """Make :meth:`serve` return soon; safe to call from a signal handler."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``, ``--log-file FILE`` and ``--log-format text|json`` to a daemon's argument parser."""
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="TOML file of settings (see hcstore.config); HCSTORE_* variables override it",
    )
    parser.add_argument(
        "--log-file",
        default=None,
        metavar="FILE",
        help="log here instead of the config's log_file (default: standard error)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        choices=LOG_FORMATS,
        help="log lines as text or one JSON object per line (default: the config's log_format, text)",
    )


def run(
    config_class: DaemonConfig,
    start: Callable[[Any], Daemon],
    config_file: str,
    *,
    log_file: str | None = None,
    log_format: str | None = None,
) -> int:
    """Load the config, start the daemon, and serve until SIGTERM or SIGINT; returns 0.

    Args:
        config_class: :class:`~hcstore.config.AgentConfig` or :class:`~hcstore.config.ControllerConfig`.
        start: builds the daemon from its config (e.g. the ``Agent`` class).
        config_file: the TOML file.
        log_file: overrides the config's ``log_file``.
        log_format: overrides the config's ``log_format``.

    Raises:
        HCStoreError: the config is invalid (:class:`~hcstore.errors.InvalidRequest`), or the
            daemon could not start (a directory it cannot create, an address it cannot bind).
    """
    import zmq  # here, so that the ``hcstore`` command line loads ZeroMQ only to run a daemon

    config = config_class.load(config_file, log_file=log_file, log_format=log_format)
    logs.configure(config.log_format, config.log_file or None)
    name = config_class.__name__.removesuffix("Config").lower()
    try:
        daemon = start(config)
    except HCStoreError as exc:  # a setting the daemon itself rejects, e.g. no mountpath
        raise InvalidRequest(f"{config_file}: the {name} cannot start: {exc}") from None
    except (OSError, zmq.ZMQError) as exc:
        raise StartFailed(f"{config_file}: the {name} cannot start: {exc}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    daemon.serve(ready_file=config.ready_file or None)
    logging.getLogger(__name__).info("%s stopped", name)
    return 0


def main(prog: str, config_class: DaemonConfig, start: Callable[[Any], Daemon], argv: list[str] | None = None) -> int:
    """The ``main()`` of a daemon's module: parse ``--config``, :func:`run`, one line on error."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Run one hcstore {prog.removeprefix('hcstore-')} in the foreground until SIGTERM or SIGINT.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(config_class, start, args.config, log_file=args.log_file, log_format=args.log_format)
    except HCStoreError as exc:
        print(f"{prog}: error ({exc.code}): {exc}", file=sys.stderr)
        return 1
