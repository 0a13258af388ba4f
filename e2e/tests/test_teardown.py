"""Lifecycle of the local control plane: nothing survives a teardown, whichever way
it happens, and a taken port is reported clearly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cmcp_e2e import build
from cmcp_e2e.cluster import STATE_FILE, LocalCluster
from cmcp_e2e.errors import ClusterError
from cmcp_e2e.procs import ProcRecord, group_members, is_running

pytestmark = pytest.mark.k8s

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}


@pytest.fixture(scope="module")
def tools() -> build.Toolset:
    return build.ensure_tools()


def _records(directory: Path) -> list[ProcRecord]:
    state = json.loads((directory / STATE_FILE).read_text())
    return [ProcRecord(**p) for p in state["processes"]]


def _processes_mentioning(directory: Path) -> list[int]:
    """Live processes whose command line names the cluster directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(directory).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _assert_all_gone(directory: Path, records: list[ProcRecord]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(is_running(r) for r in records) and not group_members(r.pid for r in records):
            break
        time.sleep(0.1)
    assert [r.name for r in records if is_running(r)] == []
    assert group_members(r.pid for r in records) == []
    assert _processes_mentioning(directory) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cmcp_e2e", *args], capture_output=True, text=True, timeout=180
    )


def test_cluster_up_then_down_from_another_process(tools: build.Toolset, tmp_path: Path) -> None:
    directory = tmp_path / "up"
    up = _cli("up", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"export KUBECONFIG={directory / 'kubeconfig'}"
    records = _records(directory)
    assert {r.name for r in records} == COMPONENTS
    assert all(is_running(r) for r in records)  # outlived the `up` process

    again = _cli("up", "--dir", str(directory))  # idempotent: reuses the running cluster
    assert "already running" in again.stderr and _records(directory) == records

    down = _cli("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert "stopped 5 processes" in down.stderr
    _assert_all_gone(directory, records)
    assert not directory.exists()


def test_in_process_stop_leaves_nothing(tools: build.Toolset, tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", tools)
    handle = cluster.start()
    records = _records(tmp_path / "c")
    assert handle.kubectl("get", "nodes", "-o", "name").stdout.count("node/") == 8
    cluster.stop()
    _assert_all_gone(tmp_path / "c", records)
    cluster.stop()  # idempotent


def test_killed_owner_takes_the_cluster_with_it(tools: build.Toolset, tmp_path: Path) -> None:
    """pytest killed with SIGKILL (no finalizer runs): the kernel ends the components."""
    directory = tmp_path / "orphan"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from cmcp_e2e import build
        from cmcp_e2e.cluster import LocalCluster
        LocalCluster(Path({str(directory)!r}), build.ensure_tools()).start()
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        records = _records(directory)
        assert all(is_running(r) for r in records)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        _assert_all_gone(directory, records)
    finally:
        owner.kill()
        owner.wait()


def test_taken_port_is_reported(tools: build.Toolset, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ClusterError) as err:
            LocalCluster(tmp_path / "p", tools, apiserver_port=port).start()
    assert err.value.code == "k8s.cluster.port_in_use"
    assert f"kube-apiserver: port 127.0.0.1:{port} is already in use" in err.value.message


def test_failed_start_names_binary_and_log(tools: build.Toolset, tmp_path: Path) -> None:
    broken = build.Toolset(**{**tools.__dict__, "kube_scheduler": tools.etcd})
    cluster = LocalCluster(tmp_path / "f", broken)
    with pytest.raises(ClusterError) as err:
        cluster.start(timeout=60)
    message = err.value.message
    assert err.value.code == "k8s.cluster.exited"
    assert f"kube-scheduler ({tools.etcd}) exited with code" in message
    assert str(tmp_path / "f" / "logs" / "kube-scheduler.log") in message
    _assert_all_gone(tmp_path / "f", _records(tmp_path / "f"))
