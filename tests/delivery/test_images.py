"""operator/Dockerfile and sidecar/Dockerfile: what can be checked without a container engine.

Multi-stage, pinned bases, non-root runtime, and every executable they (and the operator's
injection) start is a console script or module of the installed package."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cmcp_operator import api
from cmcp_operator.cli import parser as operator_parser
from cmcp_operator.models import McpGatewaySpec
from cmcp_operator.plan import sidecar_container

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"operator": "cmcp-operator", "sidecar": "cmcp"}
SCRIPTS = {ep.name: ep for ep in entry_points(group="console_scripts")}


def instructions(component: str) -> list[tuple[str, str]]:
    text = (REPO / component / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def values(component: str, word: str) -> list[str]:
    return [rest for w, rest in instructions(component) if w == word]


@pytest.mark.parametrize("component", IMAGES)
def test_multi_stage_with_pinned_bases(component: str) -> None:
    args = {}
    for rest in values(component, "ARG"):
        name, _, default = rest.partition("=")
        args[name] = default
    froms = values(component, "FROM")
    assert len(froms) >= 2, "multi-stage"
    for line in froms:
        ref = line.split()[0]
        m = re.fullmatch(r"\$\{(\w+)\}", ref)
        assert m, f"FROM {ref}: bases are build arguments (docs/images.md)"
        default = args[m.group(1)]
        # either no default (must be given, by digest) or an exact version tag / a digest
        assert (
            default == ""
            or "@sha256:" in default
            or re.fullmatch(r"[a-z0-9./-]+:\d+\.\d+[\w.-]*", default)
        ), f"{m.group(1)}={default} is not pinned"
    assert args["RUNTIME_BASE"] == ""


@pytest.mark.parametrize("component", IMAGES)
def test_runtime_is_non_root(component: str) -> None:
    users = values(component, "USER")
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it


@pytest.mark.parametrize("component", IMAGES)
def test_copied_sources_exist(component: str) -> None:
    for rest in values(component, "COPY"):
        if rest.startswith("--from"):
            continue
        for src in shlex.split(rest)[:-1]:
            assert (REPO / src).exists(), src


@pytest.mark.parametrize(("component", "script"), IMAGES.items())
def test_entrypoint_is_an_installed_console_script(component: str, script: str) -> None:
    (entry,) = values(component, "ENTRYPOINT")
    argv = json.loads(entry)
    assert argv == [f"/opt/venv/bin/{script}"]
    assert script in SCRIPTS, f"{script} is not a console script of the installed package"
    assert callable(SCRIPTS[script].load())


def test_operator_default_arguments_parse() -> None:
    (cmd,) = values("operator", "CMD")
    operator_parser().parse_args(json.loads(cmd))


def test_sidecar_default_command_and_injected_command_exist() -> None:
    (cmd,) = values("sidecar", "CMD")
    assert json.loads(cmd) == ["start", "--config", f"{api.CONFIG_DIR}/{api.CONFIG_FILE}"]
    spec = McpGatewaySpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "a"}},
            "bundle": {"name": "b", "hash": "sha256:" + "b" * 64},
            "upstreams": [{"name": "u", "url": "http://u/mcp"}],
            "placement": {"teeTypes": ["tdx"]},
        }
    )
    container = sidecar_container(spec, "gw", "img")
    # The injected container runs `cmcp` (found on the image's PATH) and probes with a module.
    assert container["command"][0] in SCRIPTS
    probe = container["startupProbe"]["exec"]["command"]
    assert probe[:2] == ["python", "-m"]
    importlib.import_module(probe[2])
