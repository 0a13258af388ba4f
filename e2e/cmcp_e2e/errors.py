"""Errors of the e2e harness: stable codes, one line, a hint (see cmcp_verifier.errors)."""

from __future__ import annotations

from cmcp_verifier.errors import CmcpError


class BuildError(CmcpError):
    """A control-plane binary could not be built or fetched."""

    code = "k8s.build"


class ClusterError(CmcpError):
    """The local control plane could not be started, reached or stopped."""

    code = "k8s.cluster"
