"""``kubectl-cmcp``: the kubectl plugin (``kubectl cmcp verify|status|bundle``).

Claims are fetched from the cluster and verified locally with :mod:`cmcp_verifier` and the
operator's own judging rules (:mod:`cmcp_operator.claims`); bundles are hashed, validated
and rendered offline. Reference: docs/kubectl-plugin.md.
"""
