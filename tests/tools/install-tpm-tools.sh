#!/usr/bin/env bash
# Install what the TPM tests need: tpm2-tools (tpm2_createak, tpm2_quote, ...) and swtpm
# (a software TPM 2.0, plus swtpm_setup from swtpm-tools). Idempotent: does nothing when the
# commands are already there. Debian/Ubuntu only (apt-get); anything else gets a clear error.
set -euo pipefail
need=()
command -v tpm2_quote >/dev/null 2>&1 || need+=(tpm2-tools)
command -v swtpm >/dev/null 2>&1 || need+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || need+=(swtpm-tools)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tpm-tools: missing ${need[*]} and no apt-get here; install them with your" \
    "package manager (Debian names: tpm2-tools swtpm swtpm-tools)" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else
    echo "install-tpm-tools: need root (or sudo) to apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-tpm-tools: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || {
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2
}
