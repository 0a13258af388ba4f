"""Audit the installed Python environment for dependencies with known vulnerabilities.

Runs ``pip-audit --strict`` (every dependency must be audited; any known vulnerability fails)
against PyPI's vulnerability data. pip-audit reads it from PyPI's per-release JSON API
(``/pypi/<name>/<version>/json``). Where that API does not answer but the per-project one
(``/pypi/<name>/json``) does — some mirrors and egress proxies serve only the latter — the
per-project answer still carries the advisories of the *latest* release, so every installed
distribution that is at its latest release is audited from it, and the others are listed as
not audited. Where PyPI does not answer at all, the audit fails: no data is never "no
vulnerabilities".

Exit status: 0 nothing known-vulnerable found; 1 vulnerabilities found; 2 the audit could not
run (PyPI unreachable, pip-audit failed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

PYPI = "https://pypi.org/pypi"
TIMEOUT = 20


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310  # nosec B310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed() -> dict[str, str]:
    """name → version of every installed distribution except the project itself (editable)."""
    out = {}
    for dist in metadata.distributions():
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable"):
            continue
        out[_normal(dist.metadata["Name"])] = dist.version
    return out


def run_pip_audit() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    done = subprocess.run(  # nosec B603
        [str(pip_audit), "--strict", "--skip-editable", "--progress-spinner", "off"],
        check=False,
    )
    return 0 if done.returncode == 0 else (1 if done.returncode == 1 else 2)


def latest_release_audit(dists: dict[str, str]) -> int:
    def one(item: tuple[str, str]) -> tuple[str, str, int, object]:
        name, version = item
        status, body = _get(f"{PYPI}/{name}/json")
        return name, version, status, body

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, sorted(dists.items())))
    if all(status == 0 for _, _, status, _ in answers):
        print(f"dependency audit: PyPI is unreachable ({answers[0][3]}); nothing was audited")
        return 2
    vulnerable, audited, behind, missing = [], 0, [], []
    for name, version, status, body in answers:
        if status != 200 or not isinstance(body, dict):
            missing.append(f"{name} {version} (HTTP {status})")
            continue
        latest = body["info"]["version"]
        if latest != version:
            behind.append(f"{name} {version} (latest {latest})")
            continue
        audited += 1
        for vuln in body.get("vulnerabilities") or []:
            vulnerable.append(f"{name} {version}: {vuln.get('id')} fixed in {vuln.get('fixed_in')}")
    print(
        "dependency audit: PyPI's per-release vulnerability API does not answer here; audited "
        f"{audited} of {len(dists)} distributions from the per-project API (installed = latest)"
    )
    if behind or missing:
        print(f"  NOT audited ({len(behind) + len(missing)}): " + ", ".join(behind + missing))
    for line in vulnerable:
        print(f"  VULNERABLE {line}")
    return 1 if vulnerable else 0


def main() -> int:
    dists = installed()
    name, version = min(dists.items())  # any installed release: does the per-release API answer?
    status, _ = _get(f"{PYPI}/{name}/{version}/json")
    if status == 200:
        return run_pip_audit()
    return latest_release_audit(dists)


if __name__ == "__main__":
    sys.exit(main())
