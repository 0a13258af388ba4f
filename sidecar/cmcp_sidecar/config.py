"""The gateway's configuration file (``cmcp-config.yaml``): schema, defaults and loading.

Keys are compatible with the seed product's (``attestation``, ``policy_bundle_path``,
``catalog_path``, ``listen_addr``, ``max_response_size_bytes``,
``policy_reload_interval_seconds``) plus what a sidecar needs. Unknown keys are errors,
types are strict, relative paths are relative to the config file, and every error names the
key path (``upstreams[1].url: must be http(s)``). docs/configuration.md is the reference.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cmcp_verifier.errors import ConfigError

ENV_DEV_MODE = "CMCP_DEV_MODE"
ENV_BEARER_TOKEN = "CMCP_BEARER_TOKEN"  # noqa: S105 (a variable name)  # nosec B105
ENV_TPM_TCTI = "CMCP_TPM_TCTI"
ENV_LOG_FORMAT = "CMCP_LOG_FORMAT"
ENV_LOG_LEVEL = "CMCP_LOG_LEVEL"
# Set by the operator from the downward API when the gateway runs as a sidecar.
ENV_POD_NAME = "CMCP_POD_NAME"
ENV_POD_NAMESPACE = "CMCP_POD_NAMESPACE"
ENV_SERVICE_ACCOUNT = "CMCP_SERVICE_ACCOUNT"

PROVIDERS = ("auto", "software", "tpm", "sev-snp", "tdx", "coco", "azure-cvm", "gpu-cc")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,62})$")
_MAX_CONFIG_BYTES = 1024 * 1024
# Listen hosts whose Host headers the loopback defaults already cover (not a bind address).
_ANY_V4 = "0.0.0.0"  # noqa: S104  # nosec B104
_ANY_OR_LOOPBACK = frozenset((_ANY_V4, "::", "127.0.0.1", "localhost", "::1"))
# Headers the gateway owns on upstream requests; a credentials file may not set them.
RESERVED_UPSTREAM_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "accept",
        "connection",
        "transfer-encoding",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
)

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TpmConfig(_Model):
    """``attestation.tpm`` (docs/attestation.md, ``tpm``); keys left out keep the provider's
    defaults, ``bundle_nv_index: null`` disables the bundle record."""

    tcti: str = "device:/dev/tpmrm0"
    pcrs: list[int] | None = None
    pcr_bank: Literal["sha1", "sha256", "sha384", "sha512"] | None = None
    ak_handle: int | str | None = None
    ak_cert: str | None = None
    ak_chain: str | None = None
    bundle_nv_index: int | str | None = None
    event_log: str | None = None


# The other hardware providers' sections, validated by each provider when it is built
# (docs/attestation.md lists their keys).
ProviderSection = dict[str, Any]


class AttestationConfig(_Model):
    provider: str = "auto"
    enforcement_mode: Literal["enforcing", "advisory", "silent"] = "enforcing"
    validity_seconds: PositiveInt = 86400
    staleness_policy: Literal["fail_closed", "warn_only"] = "fail_closed"
    expected_measurement: str | None = None
    tpm: TpmConfig = TpmConfig()
    sev_snp: ProviderSection = Field(default_factory=dict, alias="sev-snp")
    tdx: ProviderSection = Field(default_factory=dict)
    azure_cvm: ProviderSection = Field(default_factory=dict, alias="azure-cvm")
    coco: ProviderSection = Field(default_factory=dict)
    gpu_cc: ProviderSection = Field(default_factory=dict, alias="gpu-cc")

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        value = "software" if value == "software-only" else value  # the seed product's name
        if value not in PROVIDERS:
            raise ValueError(f"must be one of {', '.join(PROVIDERS)}")
        return value

    @field_validator("expected_measurement")
    @classmethod
    def _measurement(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"(sha(256|384|512):)?[0-9a-fA-F]{32,256}", value
        ):
            raise ValueError("must be hex (optionally sha256:/sha384:/sha512:-prefixed)")
        return value


class TimeoutsConfig(_Model):
    connect_seconds: PositiveFloat = 10.0
    read_idle_seconds: PositiveFloat | None = 300.0
    stream_idle_seconds: PositiveFloat | None = None
    body_seconds: PositiveFloat | None = 120.0  # a begun reply (JSON body, SSE event) must end


class TlsConfig(_Model):
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        return self


class UpstreamConfig(_Model):
    name: str
    url: str
    prefix: str | None = None
    headers_from_file: str | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    tls: TlsConfig = TlsConfig()
    max_connections: PositiveInt = 100

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be a lowercase DNS-style label ([a-z0-9_-], ≤ 63 characters)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http(s)://host[:port]/path")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use headers_from_file")
        if parts.fragment:
            raise ValueError("must not have a fragment")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not _PREFIX_RE.match(value):
            raise ValueError("must be letters, digits, '_' or '-' (no dots), ≤ 63 characters")
        return value


class BearerTokenConfig(_Model):
    name: str
    token_file: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or len(value) > 253 or not value.isprintable():
            raise ValueError("must be a printable name of at most 253 characters")
        return value


class AuthConfig(_Model):
    bearer_tokens: list[BearerTokenConfig] = []


class IdentityConfig(_Model):
    principal: str | None = None  # default: <namespace>/<service account> in a pod, else standalone
    namespace: str | None = None
    service_account: str | None = None

    @field_validator("principal", "namespace", "service_account")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not value or len(value) > 253 or not value.isprintable()):
            raise ValueError("must be a printable name of at most 253 characters")
        return value


class AuditConfig(_Model):
    path: str = "./audit/"
    fsync: Literal["every", "batch"] = "batch"
    batch_max_delay_ms: Annotated[int, Field(ge=0, le=1000)] = 0
    batch_max_entries: Annotated[int, Field(ge=1, le=65536)] = 256
    # Disk space kept allocated ahead of the log (0: none); when it cannot be renewed the
    # volume is full and new calls are refused before any entry could fail.
    reserve_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1 << 20


class ModelConfig(_Model):
    provider: str = "unspecified"
    model_id: str = "unspecified"
    version: str | None = None


DATA_CLASSES = ("public", "internal", "confidential", "restricted", "top-secret")


class ClaimsConfig(_Model):
    mode: Literal["session", "call", "interval"] = "session"
    dir: str = "./claims/"
    interval_seconds: PositiveInt = 300
    idle_timeout_seconds: PositiveInt = 900
    sink: Literal["file", "kubernetes"] = "file"
    model: ModelConfig = ModelConfig()
    subject: str | None = None
    trust_domain: str = "cluster.local"
    data_classes: Annotated[list[str], Field(min_length=1)] = list(DATA_CLASSES)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(spiffe://[^/]+/.+|did:.+)$", value):
            raise ValueError("must be a SPIFFE ID (spiffe://…) or a DID (did:…)")
        return value


class LoggingConfig(_Model):
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewayConfig(_Model):
    attestation: AttestationConfig = AttestationConfig()
    policy_bundle_path: str = "./policies/"
    # The approved bundle (sha256:<hex>): a bundle with any other hash never goes live.
    policy_bundle_expected_hash: str | None = None
    catalog_path: str | None = "./catalog.json"
    # A candidate bundle evaluated in shadow next to the active one: never enforced; where
    # it would decide differently is counted in claims (gateway.shadow) and metrics.
    shadow_bundle_path: str | None = None
    # The candidate's own catalog (tools/call and list pages are checked against it in
    # shadow, as they would be once promoted); null: see shadow_catalog_fallback.
    shadow_catalog_path: str | None = None
    # What a candidate without shadow_catalog_path is checked against: "active" (catalog_path:
    # promoting swaps only the bundle) or "empty" (no tool approved: an McpGateway's promotion
    # brings the bundle's own catalog, and a bundle without one approves none).
    shadow_catalog_fallback: Literal["active", "empty"] = "active"
    listen_addr: str = "127.0.0.1:8443"
    max_request_size_bytes: PositiveInt = 8 * 1024 * 1024
    max_response_size_bytes: PositiveInt = 2 * 1024 * 1024
    policy_reload_interval_seconds: NonNegInt = 0
    max_sessions: PositiveInt = 10000
    instance_id: str | None = None  # default: the pod name (CMCP_POD_NAME) or the host name
    upstreams: Annotated[list[UpstreamConfig], Field(min_length=1)]
    identity: IdentityConfig = IdentityConfig()
    auth: AuthConfig = AuthConfig()
    audit: AuditConfig = AuditConfig()
    claims: ClaimsConfig = ClaimsConfig()
    allowed_hosts: list[str] | None = None
    allowed_origins: list[str] = []
    logging: LoggingConfig = LoggingConfig()

    @field_validator("policy_bundle_expected_hash")
    @classmethod
    def _bundle_pin(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError("must be sha256:<64 lowercase hex digits>")
        return value

    @field_validator("listen_addr")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen_addr(value)
        return value

    @model_validator(mode="after")
    def _upstreams_distinct(self) -> GatewayConfig:
        names: dict[str, int] = {}
        prefixes: dict[str, int] = {}
        for i, up in enumerate(self.upstreams):
            if up.name in names:
                first = names[up.name]
                raise ValueError(
                    f"upstreams[{i}].name: {up.name!r} is already upstreams[{first}]'s"
                )
            names[up.name] = i
            if up.prefix is not None:
                if up.prefix in prefixes:
                    raise ValueError(
                        f"upstreams[{i}].prefix: {up.prefix!r} collides with "
                        f"upstreams[{prefixes[up.prefix]}] (tool names would collide)"
                    )
                prefixes[up.prefix] = i
        return self

    @property
    def listen_host(self) -> str:
        return split_listen_addr(self.listen_addr)[0]

    @property
    def listen_port(self) -> int:
        return split_listen_addr(self.listen_addr)[1]


def split_listen_addr(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port (e.g. 127.0.0.1:8443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif not host:
        raise ValueError("must be host:port (e.g. 127.0.0.1:8443)")
    return host, int(port)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "literal[", "json-or-python", "union[")):
            out += ("." if out else "") + part
    return out or "(top level)"


def _describe(err: Mapping[str, Any]) -> str:
    kind, msg = str(err["type"]), str(err["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[0].lower() + msg[1:] if msg else kind


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> GatewayConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming the first bad key."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _loc(tuple(err["loc"]))
        message = _describe(err)
        if (
            where == "(top level)"
            and ": " in message
            and message.split(": ", 1)[0].startswith("upstreams[")
        ):
            where, message = message.split(": ", 1)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{source}: {where}: {message}{more}",
            code="config.invalid",
            hint="see docs/configuration.md for every key and its type",
        ) from None


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read, validate and resolve a config file (paths relative to its directory)."""
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: larger than {_MAX_CONFIG_BYTES} bytes", code="config.too_large"
            )
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config {str(p)!r}: {exc.strerror}", code="config.unreadable"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text", code="config.syntax") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}{where}: {problem}", code="config.syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: must be a YAML mapping of keys", code="config.syntax")
    return LoadedConfig(parse_config(data, source=str(p)), p.resolve().parent)


class LoadedConfig:
    """A validated config plus where it came from, with paths resolved and env applied."""

    def __init__(self, config: GatewayConfig, base_dir: Path, env: Mapping[str, str] | None = None):
        self.config = config
        self.base_dir = base_dir
        self.env = dict(os.environ if env is None else env)

    def path(self, value: str) -> Path:
        """``value`` resolved against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def dev_mode(self) -> bool:
        return self.env.get(ENV_DEV_MODE, "") == "1"

    @property
    def tpm_tcti(self) -> str:
        return self.env.get(ENV_TPM_TCTI) or self.config.attestation.tpm.tcti

    def provider_options(self) -> dict[str, dict[str, Any]]:
        """Every provider's config section as ``select_provider`` takes them: the TPM's keys
        as set (``CMCP_TPM_TCTI`` applied, certificate paths resolved), the others as written."""
        a = self.config.attestation
        tpm = a.tpm.model_dump(exclude_unset=True) | {"tcti": self.tpm_tcti}
        for key in ("ak_cert", "ak_chain"):
            if tpm.get(key):
                tpm[key] = str(self.path(tpm[key]))
        return {
            "tpm": tpm,
            "sev-snp": dict(a.sev_snp),
            "tdx": dict(a.tdx),
            "azure-cvm": dict(a.azure_cvm),
            "coco": dict(a.coco),
            "gpu-cc": dict(a.gpu_cc),
        }

    @property
    def namespace(self) -> str | None:
        return self.config.identity.namespace or self.env.get(ENV_POD_NAMESPACE) or None

    @property
    def service_account(self) -> str | None:
        return self.config.identity.service_account or self.env.get(ENV_SERVICE_ACCOUNT) or None

    @property
    def principal(self) -> str:
        """The workload identity requests are attributed to when no token names another."""
        if self.config.identity.principal:
            return self.config.identity.principal
        if self.namespace and self.service_account:
            return f"{self.namespace}/{self.service_account}"
        return "standalone"

    @property
    def instance_id(self) -> str:
        return self.config.instance_id or self.env.get(ENV_POD_NAME) or socket.gethostname()

    @property
    def log_format(self) -> str:
        return self.env.get(ENV_LOG_FORMAT) or self.config.logging.format

    @property
    def log_level(self) -> str:
        return self.env.get(ENV_LOG_LEVEL) or self.config.logging.level

    def bearer_tokens(self) -> dict[str, str]:
        """Accepted bearer tokens → principal. Empty means no token is required."""
        tokens: dict[str, str] = {}
        env_token = self.env.get(ENV_BEARER_TOKEN, "")
        if env_token:
            tokens[env_token] = self.principal
        for i, entry in enumerate(self.config.auth.bearer_tokens):
            where = f"auth.bearer_tokens[{i}].token_file"
            token = _read_secret(self.path(entry.token_file), where).strip()
            if not token or not token.isprintable() or " " in token:
                raise ConfigError(f"{where}: the file must hold one token", code="config.secret")
            tokens[token] = entry.name
        return tokens

    def upstream_headers(self, index: int) -> dict[str, str]:
        """Credential headers for ``upstreams[index]`` from its headers_from_file."""
        up = self.config.upstreams[index]
        if up.headers_from_file is None:
            return {}
        where = f"upstreams[{index}].headers_from_file"
        return parse_header_lines(_read_secret(self.path(up.headers_from_file), where), where)

    def allowed_hosts(self) -> tuple[str, ...]:
        """Host header values accepted (DNS-rebinding defence); ``*`` disables the check."""
        if self.config.allowed_hosts is not None:
            return tuple(self.config.allowed_hosts)
        host = self.config.listen_host
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        if host not in _ANY_OR_LOOPBACK:
            hosts.append(f"[{host}]:*" if ":" in host else f"{host}:*")
        return tuple(hosts)


def _read_secret(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read {str(path)!r}: {exc.strerror}", code="config.secret"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {str(path)!r} is not UTF-8", code="config.secret") from None


_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def parse_header_lines(text: str, where: str) -> dict[str, str]:
    """``Name: value`` lines (blank lines and ``#`` comments ignored) → headers.

    Never echoes a value in an error: these files hold credentials.
    """
    headers: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME_RE.match(name):
            raise ConfigError(f"{where}: line {n} is not 'Name: value'", code="config.secret")
        if not value.isprintable():
            raise ConfigError(f"{where}: line {n} has a non-printable value", code="config.secret")
        if name.lower() in RESERVED_UPSTREAM_HEADERS or name.lower().startswith("mcp-param-"):
            raise ConfigError(
                f"{where}: line {n} sets {name}, which the gateway controls", code="config.secret"
            )
        headers[name] = value
    return headers
