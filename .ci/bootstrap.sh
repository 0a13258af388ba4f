#!/usr/bin/env bash
# Create (or refresh) the project's Python environment, outside the repository.
# Idempotent: a second run with nothing changed takes a few seconds.
#   CMCP_CACHE   cache root (default ~/.cache/cmcp)
# Prints the venv path on its last line.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${CMCP_CACHE:-$HOME/.cache/cmcp}"
py="${CMCP_PYTHON:-python3}"
mkdir -p "$cache"
export UV_CACHE_DIR="$cache/uv"
[ -f /etc/ssl/certs/ca-certificates.crt ] && export SSL_CERT_FILE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"

# uv itself lives in a tiny venv of its own.
tools="$cache/tools"
if [ ! -x "$tools/bin/uv" ]; then
  echo "bootstrap: installing uv into $tools" >&2
  "$py" -m venv "$tools"
  "$tools/bin/pip" install -q "uv==0.13.9" >&2
fi
uv="$tools/bin/uv"

# One venv per checkout (editable installs point at the checkout).
key="$(printf '%s' "$repo" | sha256sum | cut -c1-12)"
venv="$cache/venvs/$(basename "$repo")-$key"
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$uv" venv -q --python "$py" "$venv" >&2
fi
stamp="$venv/.cmcp-stamp"
want="$( (cat "$repo/pyproject.toml"; cat "$repo/.ci/constraints.txt" 2>/dev/null || true) | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python dependencies" >&2
  constraints=()
  [ -f "$repo/.ci/constraints.txt" ] && constraints=(-c "$repo/.ci/constraints.txt")
  # tpm2-pytss (the `tpm` extra) builds against the system's tpm2-tss: headers first.
  bash "$repo/.ci/install-debs.sh" libtss2-dev pkg-config gcc python3-dev
  VIRTUAL_ENV="$venv" "$uv" pip install -q "${constraints[@]}" -e "$repo[all,dev,tpm,gpu]" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"
