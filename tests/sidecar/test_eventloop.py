"""cmcp start runs on uvloop when it is installed; CMCP_EVENT_LOOP=asyncio opts out."""

from __future__ import annotations

import asyncio

import pytest

from cmcp_sidecar import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()).startswith("uvloop")
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_a_missing_uvloop_falls_back_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_uvloop(name: str, *args: object, **kwargs: object) -> object:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    # A platform without uvloop wheels cannot be produced here: imports of it are refused.
    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert eventloop.loop_name({}) == "asyncio"
    with pytest.raises(ImportError):
        eventloop.loop_name({eventloop.ENV: "uvloop"})
