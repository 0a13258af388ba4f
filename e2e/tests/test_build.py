"""The wrapper go.mod that lets `go build` compile Kubernetes' commands from the proxy."""

from __future__ import annotations

import pytest

from cmcp_e2e.build import _kubernetes_ldflags, _kubernetes_pin, wrapper_go_mod
from cmcp_e2e.errors import BuildError

UPSTREAM = """module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/foo/bar v1.2.3
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/foo/bar => github.com/fork/bar v1.2.4
)

replace k8s.io/kms v0.0.0 => ./staging/src/k8s.io/kms
"""


def test_every_local_replace_is_pinned_to_the_staging_tag() -> None:
    gomod = wrapper_go_mod("k8s.io/kubernetes", "v1.33.13", UPSTREAM, _kubernetes_pin("v1.33.13"))
    lines = gomod.splitlines()
    assert "go 1.24.0" in lines and "godebug default=go1.24" in lines
    assert "require k8s.io/kubernetes v1.33.13" in lines
    replaces = [line for line in lines if line.startswith("replace ")]
    assert replaces == [
        "replace k8s.io/api => k8s.io/api v0.33.13",
        "replace k8s.io/client-go => k8s.io/client-go v0.33.13",
        "replace k8s.io/kms => k8s.io/kms v0.33.13",
    ]


def test_pin_function_sees_the_required_version() -> None:
    seen: dict[str, str] = {}

    def pin(mod: str, required: str) -> str:
        seen[mod] = required
        return "v9.9.9"

    wrapper_go_mod("k8s.io/kubernetes", "v1.0.0", UPSTREAM, pin)
    assert seen == {"k8s.io/api": "v0.0.0", "k8s.io/client-go": "v0.0.0", "k8s.io/kms": ""}


def test_module_without_local_replaces_is_refused() -> None:
    with pytest.raises(BuildError) as err:
        wrapper_go_mod(
            "example.com/x", "v1.0.0", "module example.com/x\n", _kubernetes_pin("v1.0.0")
        )
    assert err.value.code == "k8s.build.no_replace"


def test_version_is_stamped_into_the_binaries() -> None:
    flags = _kubernetes_ldflags("v1.33.13")
    assert "-X k8s.io/component-base/version.gitVersion=v1.33.13" in flags
    assert "-X k8s.io/component-base/version.gitMinor=33" in flags
    assert flags.startswith("-s -w")
