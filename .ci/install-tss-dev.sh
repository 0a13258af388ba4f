#!/usr/bin/env bash
# Debian packages that building tpm2-pytss from its sdist needs (the `tpm` extra): the tpm2-tss
# headers and libraries (libtss2-dev, 3.2.1 on bookworm), pkg-config, a C compiler and the
# Python headers. Idempotent: installs only what is missing; quiet when nothing is.
set -euo pipefail
need=()
for pkg in libtss2-dev pkg-config gcc python3-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tss-dev: missing ${need[*]} and no apt-get here; install the tpm2-tss" \
    "development files (pkg-config tss2-esys) with your package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else
    echo "install-tss-dev: need root (or sudo) to apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-tss-dev: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || {
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >&2
}
