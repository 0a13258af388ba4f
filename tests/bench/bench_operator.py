"""Operator scale: N agent Deployments across M namespaces, one McpGateway per namespace.

    python -m tests.bench.bench_operator [--deployments 1000] [--namespaces 50] [--json FILE]

Starts its own local control plane (e2e/, kwok nodes; or uses ``$KUBECONFIG`` with
``--external``), installs the CRDs and the operator's RBAC, runs ``cmcp-operator`` as a
process with the operator's ServiceAccount token, creates the namespaces, a pinned bundle
per namespace and the Deployments (``replicas: 0``: 1 000 pods would not fit the 8 simulated
nodes' 110-pod limit, and pods do not change the operator's work), waits until the operator
has seen them, then creates the M McpGateways at once and measures:

* the time from that moment until every Deployment's pod template carries the sidecar
  (polled, and checked against the API server's ``managedFields`` time of the operator's
  last write), and until every gateway reports ``Ready``;
* the operator's RSS (peak ``VmHWM`` and final ``VmRSS``);
* the API requests the operator's own client sent (its ``cmcp_operator_api_requests_total``
  counter) per gateway and per workload, cross-checked with the API server's
  ``apiserver_request_total`` for Deployment PATCHes.

Results go to docs/benchmarks.md ("Operator scale"). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e" / "tests" / "operator"))

from opkit import (  # noqa: E402
    OperatorProcess,
    bundle,
    bundle_hash,
    deployment,
    gateway,
    operator_kubeconfig,
)

from cmcp_e2e import build  # noqa: E402
from cmcp_e2e.cluster import LocalCluster  # noqa: E402
from cmcp_e2e.external import from_environment  # noqa: E402
from cmcp_e2e.handle import K8sCluster  # noqa: E402
from tests.graceful import sigterm_as_interrupt  # noqa: E402

ALLOW = "allow-all-but-one"
LABEL = "cmcp-bench"
READY_PATH = 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _create(cluster: K8sCluster, docs: list[dict[str, Any]], chunk: int = 200) -> None:
    for i in range(0, len(docs), chunk):
        cluster.kubectl(
            "create", "-f", "-", input=yaml.safe_dump_all(docs[i : i + chunk]), timeout=300
        )


def _injected_count(cluster: K8sCluster) -> tuple[int, int]:
    out = cluster.kubectl(
        "get",
        "deployments",
        "-A",
        "-l",
        LABEL,
        "-o",
        'jsonpath={range .items[*]}{.spec.template.spec.initContainers[0].name}{"\\n"}{end}',
        timeout=120,
    ).stdout
    lines = out.splitlines()
    return sum(1 for line in lines if line == "cmcp-gateway"), len(lines)


def _ready_count(cluster: K8sCluster) -> int:
    out = cluster.kubectl(
        "get",
        "mcpgateways",
        "-A",
        "-o",
        READY_PATH,
    ).stdout
    return sum(1 for line in out.splitlines() if line == "True")


def _last_operator_write(cluster: K8sCluster) -> dt.datetime:
    items = json.loads(
        cluster.kubectl(
            "get",
            "deployments",
            "-A",
            "-l",
            LABEL,
            "-o",
            "json",
            "--show-managed-fields",
            timeout=120,
        ).stdout
    )["items"]
    times = [
        dt.datetime.fromisoformat(m["time"].replace("Z", "+00:00"))
        for d in items
        for m in d["metadata"].get("managedFields") or []
        if m.get("manager") == "cmcp-operator"
    ]
    return max(times)


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _requests(op: OperatorProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in op.metrics().splitlines():
        m = re.match(
            r'cmcp_operator_api_requests_total\{resource="([^"]+)",verb="([^"]+)"\} (\S+)', line
        )
        if m:
            out[f"{m.group(2)} {m.group(1)}"] = float(m.group(3))
    return out


def _apiserver_patches(cluster: K8sCluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="deployments"' in line
            and 'verb="PATCH"' in line
            and 'subresource=""' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(cluster: K8sCluster, work: Path, n_deploy: int, n_ns: int) -> dict[str, Any]:
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    for crd in ("mcpgateways.cmcp.dev", "mcppolicybundles.cmcp.dev"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    kubeconfig = operator_kubeconfig(cluster, work)
    op = OperatorProcess(kubeconfig, work, "--resync-seconds", "600").start()
    try:
        digest = bundle_hash(ALLOW)
        namespaces = [f"bench-{i:03d}" for i in range(n_ns)]
        per_ns = [n_deploy // n_ns + (1 if i < n_deploy % n_ns else 0) for i in range(n_ns)]
        _say(f"creating {n_ns} namespaces, bundles and {n_deploy} Deployments")
        docs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces
        ]
        _create(cluster, docs)
        docs = [bundle("policy", ns, ALLOW, expected=digest) for ns in namespaces]
        for ns, count in zip(namespaces, per_ns, strict=True):
            for i in range(count):
                dep = deployment(f"agent-{i:03d}", ns, labels={LABEL: "1"})
                dep["spec"]["replicas"] = 0
                docs.append(dep)
        started = time.monotonic()
        _create(cluster, docs)
        _say(f"created in {time.monotonic() - started:.1f}s; waiting for bundles and the operator")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready = (
                cluster.kubectl(
                    "get",
                    "mcpb",
                    "-A",
                    "-o",
                    READY_PATH,
                )
                .stdout.splitlines()
                .count("True")
            )
            if ready == n_ns:
                break
            time.sleep(1)
        time.sleep(5)  # let the operator digest the initial listing
        before = _requests(op)
        cpu_before = _cpu_seconds(op.proc.pid)
        patches_before = _apiserver_patches(cluster)
        gateways = [gateway("gw", ns, "policy", digest) for ns in namespaces]
        _say("creating the McpGateways")
        t0_wall = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        _create(cluster, gateways)
        created = time.monotonic() - t0
        rss_peak_seen = 0
        injected_at = ready_at = None
        samples = []
        while time.monotonic() - t0 < 600:
            done, _ = _injected_count(cluster)
            rss = _proc_status(op.proc.pid)
            rss_peak_seen = max(rss_peak_seen, rss["VmRSS"])
            samples.append((round(time.monotonic() - t0, 1), done))
            if injected_at is None and done == n_deploy:
                injected_at = time.monotonic() - t0
                _say(f"all {n_deploy} injected after {injected_at:.1f}s")
            if injected_at is not None and _ready_count(cluster) == n_ns:
                ready_at = time.monotonic() - t0
                break
            time.sleep(0.5)
        cpu = _cpu_seconds(op.proc.pid) - cpu_before
        last_write = (_last_operator_write(cluster) - t0_wall).total_seconds()
        time.sleep(3)
        after = _requests(op)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}
        delta = {k: v for k, v in delta.items() if v}
        total_requests = sum(delta.values())
        status = _proc_status(op.proc.pid)
        return {
            "deployments": n_deploy,
            "namespaces": n_ns,
            "gateways_created_in_s": round(created, 2),
            "all_injected_s": round(injected_at, 1) if injected_at is not None else None,
            "last_operator_write_s": round(last_write, 1),
            "all_ready_s": round(ready_at, 1) if ready_at is not None else None,
            "operator_cpu_s": round(cpu, 1),
            "rss_peak_mib": max(status["VmHWM"], rss_peak_seen),
            "rss_end_mib": status["VmRSS"],
            "api_requests": delta,
            "api_requests_total": total_requests,
            "requests_per_gateway": round(total_requests / n_ns, 1),
            "requests_per_workload": round(total_requests / n_deploy, 2),
            "apiserver_deployment_patches": _apiserver_patches(cluster) - patches_before,
            "progress": samples[:: max(1, len(samples) // 20)],
        }
    finally:
        op.stop(signal.SIGTERM)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem.split(":", 1)[1].strip(),
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deployments", type=int, default=1000)
    p.add_argument("--namespaces", type=int, default=50)
    p.add_argument("--external", action="store_true", help="use $KUBECONFIG's cluster")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="cmcp-bench-op-") as tmp:
        work = Path(tmp)
        local = None
        if args.external:
            cluster = from_environment()
            if cluster is None:
                raise SystemExit("--external: $KUBECONFIG is not set or not reachable")
        else:
            local = LocalCluster(work / "cluster", build.ensure_tools(), log=_say)
            cluster = local.start()
        try:
            result = run(cluster, work, args.deployments, args.namespaces)
        finally:
            if local is not None:
                local.stop()
    result["machine"] = info
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = (
        result["all_injected_s"] is not None
        and result["all_injected_s"] <= 60
        and result["rss_peak_mib"] < 300
    )
    _say("PASS" if ok else "FAIL: over 60 s or 300 MiB")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    sigterm_as_interrupt()
    main()
