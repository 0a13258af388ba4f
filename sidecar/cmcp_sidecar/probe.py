"""Container probe: ``python -m cmcp_sidecar.probe URL`` exits 0 when URL answers 2xx.

The gateway listens on loopback only (the agent is its only client), which the kubelet's
httpGet probes cannot reach, so the injected sidecar's startup, readiness and liveness
probes run this inside the container instead. Standard library only: it must start fast.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit


def check(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(ok, one line saying why) for a GET of a loopback http URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return False, f"refusing to probe {url!r}: only loopback http URLs"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (checked above)  # nosec B310
            return 200 <= resp.status < 300, f"{resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cmcp_sidecar.probe http://127.0.0.1:PORT/readyz", file=sys.stderr)
        return 2
    ok, why = check(args[0])
    if not ok:
        print(f"probe {args[0]}: {why}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
