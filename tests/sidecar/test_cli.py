"""``cmcp``: exit codes, one-line errors, validate-config, catalog pin, start refusing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cmcp_sidecar.cli import main
from cmcp_verifier.bundle import read_bundle_dir
from cmcp_verifier.catalog import parse_catalog, tool_definition_hash
from tests.mcp.peers import REPO, sdk_server

BUNDLE_FILES = {
    "policy.cedar": "permit(principal, action, resource);\n"
    'forbid(principal, action == Action::"call_tool", resource == Tool::"get-env");\n',
    "schema.cedarschema": "entity Agent;\n",
    "manifest.json": '{"name": "test", "version": "1"}\n',
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, text: str) -> Path:
    bundle = tmp_path / "policies"
    bundle.mkdir(exist_ok=True)
    for name, content in BUNDLE_FILES.items():
        (bundle / name).write_text(content)
    cfg = tmp_path / "cmcp.yaml"
    cfg.write_text(text)
    return cfg


def test_validate_config_ok_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "crm.headers").write_text("Authorization: Bearer abc\n")
    cfg = write_config(
        tmp_path,
        "catalog_path: null\npolicy_bundle_path: ./policies/\nupstreams:\n"
        "  - {name: crm, url: 'https://crm.example/mcp', prefix: crm,\n"
        "     headers_from_file: crm.headers}\n",
    )
    code, out, err = run(capsys, "validate-config", "--config", str(cfg))
    assert code == 0 and out.startswith("OK: ") and "crm.<tool>" in out and "Authorization" in out
    assert "abc" not in out + err  # credential values are never printed
    code, out, _ = run(capsys, "validate-config", "--config", str(cfg), "-o", "json")
    doc = json.loads(out)
    assert (
        code == 0
        and doc["valid"]
        and doc["upstreams"][0]["credential_headers"] == ["Authorization"]
    )
    assert doc["policy_bundle"]["hash"].startswith("sha256:")


def test_validate_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path,
        "upstreams:\n  - {name: a, url: 'http://h/mcp'}\n  - {name: b, url: 'gopher://h'}\n",
    )
    code, _, err = run(capsys, "validate-config", "--config", str(cfg))
    assert code == 1
    assert err.splitlines()[0].startswith("error[config.invalid]: ")
    assert "upstreams[1].url: must be http(s)" in err and "hint: " in err
    code, _, err = run(capsys, "validate-config", "--config", str(tmp_path / "nope.yaml"))
    assert code == 1 and "error[config.unreadable]" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["validate-config"])
    assert exit_info.value.code == 2


def test_catalog_pin_approves_every_listed_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with sdk_server() as url:
        code, out, err = run(capsys, "catalog", "pin", "--upstream", url, "--name", "crm")
        assert code == 0, err
        catalog = parse_catalog(out)
        import asyncio

        from mcp import Client
        from tests.mcp.peers import transport

        async def live() -> list[dict[str, Any]]:
            async with Client(transport(url), mode="legacy") as c:
                return [
                    t.model_dump(by_alias=True, exclude_none=True)
                    for t in (await c.list_tools()).tools
                ]

        tools = asyncio.run(live())
    assert {e.name for e in catalog.entries.values()} == {t["name"] for t in tools}
    for tool in tools:
        assert catalog.lookup("crm", tool["name"]).definition_hash == tool_definition_hash(tool)  # type: ignore[union-attr]


def test_catalog_pin_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "catalog", "pin", "--upstream", "http://127.0.0.1:9/mcp")
    assert code == 1 and err.startswith("error[upstream.unreachable]")


def test_start_refuses_without_dev_mode_or_hardware(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, "catalog_path: null\nupstreams: [{name: a, url: 'http://127.0.0.1:9/mcp'}]\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cmcp"), "start", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error[attestation.no_provider]: ")
    assert "found no TEE hardware" in proc.stderr and "CMCP_DEV_MODE=1" in proc.stderr


def test_validate_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = REPO / "policies" / "demo"
    good = read_bundle_dir(bundle).hash
    code, out, _ = run(
        capsys, "validate-bundle", "--bundle-path", str(bundle), "--expected-hash", good
    )
    assert code == 0 and good in out and "OK" in out
    code, out, _ = run(
        capsys,
        "validate-bundle",
        "--bundle-path",
        str(bundle),
        "--expected-hash",
        good,
        "-o",
        "json",
    )
    assert code == 0 and json.loads(out)["hash"] == good and json.loads(out)["hash_matches"]
    code, out, err = run(
        capsys,
        "validate-bundle",
        "--bundle-path",
        str(bundle),
        "--expected-hash",
        "sha256:" + "0" * 64,
    )
    assert code == 1 and good in out and err.startswith("error[bundle.hash_mismatch]")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "policies.cedar").write_text(
        "permit(principal, action, resource);\n"
        'forbid(principal, action == Action::"call_tool", resource == Tol::"x");\n'
    )
    code, _, err = run(
        capsys, "validate-bundle", "--bundle-path", str(broken), "--expected-hash", good
    )
    assert code == 1 and err.startswith("error[bundle.") and "policies.cedar:2:" in err
