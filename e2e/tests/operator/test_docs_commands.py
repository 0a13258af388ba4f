"""Every `$ command` in the console blocks of docs/kubectl-plugin.md and docs/gitops.md runs
from the repository root and succeeds (they only read: bundle and kustomize commands). The
cluster commands these pages show are exercised by test_kubectl_plugin.py and
test_gitops.py; docs/helm.md has its own walkthrough test."""

from __future__ import annotations

import os
import subprocess

import pytest
from opkit import BIN, REPO, doc_steps

from cmcp_e2e import build

DOCS = ["kubectl-plugin.md", "gitops.md"]
COMMANDS = [
    (doc, cmd) for doc in DOCS for kind, cmd in doc_steps((REPO / "docs" / doc).read_text())
    if kind == "run"
]  # fmt: skip


def test_each_doc_has_commands() -> None:
    assert {doc for doc, _ in COMMANDS} == set(DOCS)


@pytest.mark.parametrize(("doc", "command"), COMMANDS)
def test_doc_command(doc: str, command: str) -> None:
    kubectl = build.ensure_clients()[0]
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(kubectl.parent), str(BIN), os.environ["PATH"]]),
    }
    env.pop("KUBECONFIG", None)  # these commands need no cluster
    res = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, f"{doc}: $ {command}\n{res.stdout}\n{res.stderr}"
    assert res.stdout.strip()
