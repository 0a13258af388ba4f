#!/usr/bin/env bash
# Install the named Debian packages that are not installed yet (apt-get; an update only when a
# first attempt fails). Idempotent and quiet when nothing is missing. Used by bootstrap.sh
# (tpm2-pytss build dependencies) and tests/tools/install-tpm-tools.sh.
set -euo pipefail
need=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-debs: missing ${need[*]} and no apt-get here; install them (Debian names)" \
    "with your package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else
    echo "install-debs: need root (or sudo) to apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-debs: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || {
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2
}
