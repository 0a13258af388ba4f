"""The krew manifest template names the console script that the package installs."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "operator" / "krew" / "cmcp.yaml"


def test_krew_manifest_template() -> None:
    text = MANIFEST.read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == {"VERSION", "SHA256_UNIX"}
    filled = text.replace("${VERSION}", "0.1.0").replace("${SHA256_UNIX}", "0" * 64)
    doc = yaml.safe_load(filled)
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert doc["kind"] == "Plugin" and doc["metadata"]["name"] == "cmcp"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", doc["spec"]["version"])
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    for platform in doc["spec"]["platforms"]:
        # krew runs `bin`; kubectl finds it as the plugin `cmcp` (kubectl-<name>)
        assert platform["bin"] == f"kubectl-{doc['metadata']['name']}"
        assert platform["bin"] in scripts
        assert re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
        assert platform["uri"].startswith("https://")
