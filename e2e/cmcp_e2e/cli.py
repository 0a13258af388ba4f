"""``python -m cmcp_e2e COMMAND`` — what the Makefile's cluster targets call.

build   build or fetch every binary (idempotent), print their paths as JSON
up      start a cluster in the background (build first if needed) and print
        ``export KUBECONFIG=...``; a second ``up`` reuses the running one
down    stop the cluster that ``up`` started (from any shell) and delete its directory
status  say whether it runs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cmcp_e2e import build
from cmcp_e2e.cluster import LocalCluster, running_state, stop_dir
from cmcp_e2e.errors import BuildError, ClusterError


def default_dir() -> Path:
    """``$CMCP_K8S_CLUSTER_DIR`` or ``$CMCP_CACHE/k8s/cluster-up``."""
    env = os.environ.get("CMCP_K8S_CLUSTER_DIR")
    return Path(env) if env else build.cache_root() / "cluster-up"


def _say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def _up(directory: Path, port: int | None) -> int:
    running = running_state(directory)
    if running is not None:
        _say(f"already running ({running.server}); logs in {directory / 'logs'}")
        print(f"export KUBECONFIG={running.kubeconfig}")
        return 0
    stop_dir(directory)  # leftovers of a crashed cluster
    tools = build.ensure_tools()
    cluster = LocalCluster(directory, tools, tie_to_parent=False, apiserver_port=port, log=_say)
    handle = cluster.start()
    _say(f"API server {handle.server}; logs in {handle.log_dir}; stop with `make cluster-down`")
    _say(f"kubectl: {tools.kubectl}  helm: {tools.helm}")
    print(f"export KUBECONFIG={handle.kubeconfig}")
    return 0


def _down(directory: Path) -> int:
    records = stop_dir(directory)
    _say(f"stopped {len(records)} processes" if records else "no cluster was running")
    return 0


def _status(directory: Path) -> int:
    running = running_state(directory)
    if running is None:
        _say("not running")
        return 1
    _say(f"running: {running.server}")
    print(f"export KUBECONFIG={running.kubeconfig}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 on a reported error)."""
    parser = argparse.ArgumentParser(prog="python -m cmcp_e2e", description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=None, help="cluster directory (up/down)")
    parser.add_argument("--port", type=int, default=None, help="kube-apiserver port (up)")
    args = parser.parse_args(argv)
    directory = (args.dir or default_dir()).resolve()
    try:
        if args.command == "build":
            return build.main()
        if args.command == "up":
            return _up(directory, args.port)
        if args.command == "down":
            return _down(directory)
        return _status(directory)
    except (BuildError, ClusterError) as exc:
        print(exc.render(), file=sys.stderr)
        return 1
