#!/bin/sh
# CI step: render every bundle source in bundles/ to a hash-pinned McpPolicyBundle,
# one kustomization directory per content hash in rendered/ (never edited by hand; old ones
# stay for rollback).
# Needs `kubectl-cmcp` on PATH (pip install 'confidential-mcp[operator]').
set -eu
cd "$(dirname "$0")/.."
for dir in bundles/*/; do
  name=$(basename "$dir")
  kubectl-cmcp bundle validate "$dir"
  hash=$(kubectl-cmcp bundle hash "$dir")
  short=$(printf '%s' "$hash" | cut -c8-19)
  out="rendered/$name-$short"
  mkdir -p "$out"
  kubectl-cmcp bundle render "$dir" --name "$name" > "$out/mcppolicybundle.yaml"
  printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
    "resources: [mcppolicybundle.yaml]" > "$out/kustomization.yaml"
  echo "$out  $hash"
done
