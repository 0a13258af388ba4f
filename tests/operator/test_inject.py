"""Injection is reversible and stable: strip(inject(t)) == t, inject twice == once."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcp_operator import api
from cmcp_operator.inject import (
    InjectionRefused,
    decode_record,
    encode_record,
    inject,
    same_template,
    strip,
)
from cmcp_operator.models import McpGatewaySpec
from cmcp_operator.plan import build_plan

HASH = "sha256:" + "a" * 64


def _spec(**extra: Any) -> McpGatewaySpec:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "agent"}},
        "bundle": {"name": "b", "hash": HASH},
        "upstreams": [
            {"name": "crm", "url": "https://crm.example/mcp", "headersSecretRef": {"name": "crm"}},
            {"name": "wiki", "url": "http://wiki:8080/mcp"},
        ],
        "placement": {"teeTypes": ["sev-snp", "tdx"], "nodeLabels": {"pool": "cc"}},
    }
    body.update(extra)
    return McpGatewaySpec.model_validate(body)


PLAN = build_plan(_spec(), "gw", bundle_cm="bcm", config_cm="ccm", image="img:1")


def _template(**spec: Any) -> dict[str, Any]:
    pod = {"containers": [{"name": "agent", "image": "agent:1"}], **spec}
    return {"metadata": {"labels": {"app": "agent"}}, "spec": pod}


TEMPLATES = {
    "bare": _template(),
    "everything-set": _template(
        automountServiceAccountToken=True,
        runtimeClassName="gvisor",
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["n"]}
                            ]
                        },
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [
                                {"key": "disk", "operator": "In", "values": ["ssd"]}
                            ]
                        },
                    }
                ],
            },
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []},
        },
        initContainers=[{"name": "migrate", "image": "m:1"}],
        volumes=[{"name": "cache", "emptyDir": {}}],
    ),
    "env-present": {
        "metadata": {"labels": {"app": "agent", api.LABEL_GATEWAY: "someone-else"}},
        "spec": {
            "containers": [
                {"name": "agent", "image": "a", "env": [{"name": "MCP_GATEWAY_URL", "value": "x"}]},
                {"name": "helper", "image": "h", "env": []},
            ],
            "tolerations": [
                {
                    "key": "confidential-computing",
                    "operator": "Equal",
                    "value": "true",
                    "effect": "NoSchedule",
                }
            ],
        },
    },
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_round_trip(name: str) -> None:
    original = TEMPLATES[name]
    injected, record = inject(original, PLAN)
    assert strip(injected, decode_record(encode_record(record)) or {}) == original
    again, record2 = inject(strip(injected, record), PLAN)
    assert again == injected and record2 == record


def test_anatomy() -> None:
    injected, record = inject(TEMPLATES["everything-set"], PLAN)
    spec = injected["spec"]
    assert spec["initContainers"][0]["name"] == api.SIDECAR_NAME
    assert spec["initContainers"][1]["name"] == "migrate"  # ours first: up before theirs
    assert spec["automountServiceAccountToken"] is False
    assert spec["runtimeClassName"] == "gvisor"  # no runtime class in the plan: theirs kept
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    # (zone=a OR name=n) AND (one of the TEE label sets) AND pool=cc: the cross product.
    assert len(terms) == 2 * 4
    assert all(
        {"key": "pool", "operator": "In", "values": ["cc"]} in t["matchExpressions"] for t in terms
    )
    assert terms[-1]["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["n"]}]
    assert injected["metadata"]["labels"][api.LABEL_GATEWAY] == "gw"
    assert {"name": "MCP_GATEWAY_URL", "value": "http://127.0.0.1:8443/mcp"} in spec["containers"][
        0
    ]["env"]
    assert record["gateway"] == "gw"


def test_agent_gets_no_sidecar_volumes() -> None:
    injected, _ = inject(TEMPLATES["bare"], PLAN)
    agent = injected["spec"]["containers"][0]
    assert "volumeMounts" not in agent
    sidecar = injected["spec"]["initContainers"][0]
    mounts = {m["name"] for m in sidecar["volumeMounts"]}
    assert mounts == set(api.OUR_VOLUMES)
    projected = next(v for v in injected["spec"]["volumes"] if v["name"] == api.VOLUME_UPSTREAMS)
    assert projected["projected"]["sources"] == [
        {"secret": {"name": "crm", "items": [{"key": "headers", "path": "crm/headers"}]}}
    ]


def test_existing_env_value_restored() -> None:
    original = TEMPLATES["env-present"]
    injected, record = inject(original, PLAN)
    agent, helper = injected["spec"]["containers"]
    assert agent["env"] == [{"name": "MCP_GATEWAY_URL", "value": "http://127.0.0.1:8443/mcp"}]
    assert helper["env"] == [{"name": "MCP_GATEWAY_URL", "value": "http://127.0.0.1:8443/mcp"}]
    # The equal toleration was already there: not added twice, not removed on strip.
    assert injected["spec"]["tolerations"] == original["spec"]["tolerations"]
    assert strip(injected, record) == original


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (_template(containers=[{"name": api.SIDECAR_NAME, "image": "x"}]), "ContainerNameClash"),
        (
            _template(initContainers=[{"name": api.SIDECAR_NAME, "image": "x"}]),
            "ContainerNameClash",
        ),
        (_template(volumes=[{"name": api.VOLUME_DATA, "emptyDir": {}}]), "VolumeNameClash"),
        (
            _template(
                containers=[
                    {
                        "name": "agent",
                        "image": "a",
                        "volumeMounts": [{"name": api.VOLUME_UPSTREAMS, "mountPath": "/steal"}],
                    }
                ]
            ),
            "VolumeNameClash",
        ),
    ],
)
def test_clashes_refused(template: dict[str, Any], reason: str) -> None:
    with pytest.raises(InjectionRefused) as err:
        inject(template, PLAN)
    assert err.value.reason == reason


def test_named_containers_must_exist() -> None:
    plan = build_plan(
        _spec(injection={"containers": ["llm"]}), "gw", bundle_cm="b", config_cm="c", image="i"
    )
    with pytest.raises(InjectionRefused) as err:
        inject(TEMPLATES["bare"], plan)
    assert err.value.reason == "ContainerNotFound" and "llm" in err.value.message


def test_strip_tolerates_missing_pieces_and_user_edits() -> None:
    injected, record = inject(TEMPLATES["everything-set"], PLAN)
    edited = copy.deepcopy(injected)
    edited["spec"]["initContainers"] = [
        c for c in edited["spec"]["initContainers"] if c["name"] != api.SIDECAR_NAME
    ]  # someone removed it
    edited["spec"]["containers"][0]["image"] = "agent:2"  # and changed their own image
    back = strip(edited, record)
    expected = copy.deepcopy(TEMPLATES["everything-set"])
    expected["spec"]["containers"][0]["image"] = "agent:2"
    assert back == expected


def test_quantities_compare_by_value() -> None:
    a = {"spec": {"initContainers": [{"resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}}]}}
    b = {
        "spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "500m", "memory": "1024Mi"}}}]
        }
    }
    assert same_template(a, b)
    b["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = "501m"
    assert not same_template(a, b)


def test_records_are_versioned() -> None:
    assert decode_record(None) is None
    assert decode_record("{not json") is None
    assert decode_record('{"v": 99}') is None


_names = st.sampled_from(["a", "b", "agent", "side"])
_tolerations = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["confidential-computing", "gpu", "x"]),
            "operator": st.sampled_from(["Equal", "Exists"]),
        },
        optional={"value": st.just("true"), "effect": st.sampled_from(["NoSchedule", "NoExecute"])},
    ),
    max_size=3,
)


@st.composite
def templates(draw: st.DrawFn) -> dict[str, Any]:
    containers = [
        {
            "name": n,
            "image": "i",
            **(
                {
                    "env": draw(
                        st.lists(
                            st.fixed_dictionaries(
                                {
                                    "name": st.sampled_from(["MCP_GATEWAY_URL", "A", "B"]),
                                    "value": st.text(max_size=3),
                                }
                            ),
                            max_size=2,
                            unique_by=lambda e: e["name"],
                        )
                    )
                }
                if draw(st.booleans())
                else {}
            ),
        }
        for n in draw(st.lists(_names, min_size=1, max_size=3, unique=True))
    ]
    spec: dict[str, Any] = {"containers": containers}
    for key, strategy in (
        ("tolerations", _tolerations),
        ("automountServiceAccountToken", st.booleans()),
        ("runtimeClassName", st.sampled_from(["kata", "gvisor"])),
        (
            "affinity",
            st.sampled_from(
                [
                    {},
                    {"podAffinity": {}},
                    {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [{"key": "z", "operator": "Exists"}]}
                                ]
                            }
                        }
                    },
                ]
            ),
        ),
    ):
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    meta: dict[str, Any] = {"labels": {"app": "agent"}}
    if draw(st.booleans()):
        meta["labels"][api.LABEL_GATEWAY] = "other"
    return {"metadata": meta, "spec": spec}


@settings(max_examples=300, deadline=None)
@given(templates(), st.sampled_from(["plain", "runtime-class", "no-placement"]))
def test_round_trip_property(template: dict[str, Any], variant: str) -> None:
    extra: dict[str, Any] = {
        "plain": {},
        "runtime-class": {"placement": {"runtimeClassName": "kata-qemu-snp"}},
        "no-placement": {"placement": {"tolerations": []}, "attestation": {"allowSoftware": True}},
    }[variant]
    plan = build_plan(_spec(**extra), "gw", bundle_cm="b", config_cm="c", image="i")
    injected, record = inject(template, plan)
    assert strip(injected, decode_record(encode_record(record)) or {}) == template
    assert inject(strip(injected, record), plan) == (injected, record)
