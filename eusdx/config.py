"""The one configuration object of eusdx.

Read once at start-up (``load_settings``) and passed down; nothing else reads the environment.
Sources, highest priority first: explicit overrides, ``EUSDX_*`` environment variables, the TOML
file given by ``--config`` (same key names, lower case), then the embedded defaults below, which
need no Redis and no PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from eusdx.errors import ConfigError

__all__ = [
    "DESTINATION_KINDS",
    "SR_CLASSES",
    "WEBHOOK_EVENTS",
    "Destination",
    "ExportDestination",
    "Settings",
    "load_settings",
    "parse_destination",
    "parse_syslog_endpoint",
]

CommaList = Annotated[list[str], NoDecode]

_DEST_RE = re.compile(r"^(?P<ae>[^@\s]{1,16})@(?P<host>[^:\s]+):(?P<port>\d{1,5})$")


class ExportDestination:
    """One ``AE@host:port`` that receives our SRs."""

    __slots__ = ("ae_title", "host", "port")

    def __init__(self, ae_title: str, host: str, port: int) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        self.ae_title = ae_title
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"ExportDestination({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExportDestination) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def parse_destination(text: str) -> ExportDestination:
    """Parse ``AE@host:port``; raise ``ValueError`` naming the bad text."""
    m = _DEST_RE.match(text.strip())
    if not m:
        raise ValueError(f"export destination {text!r} is not AE@host:port")
    return ExportDestination(m["ae"], m["host"], int(m["port"]))


_SYSLOG_RE = re.compile(r"^(?P<scheme>tls|udp)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):"
                        r"(?P<port>\d{1,5})/?$")


def parse_syslog_endpoint(text: str) -> tuple[str, str, int]:
    """Parse an audit repository address ``tls://host:port`` / ``udp://host:port`` into
    ``(scheme, host, port)`` (an IPv6 host is written in brackets and returned without them).

    Raises
    ------
    ValueError
        Another form, or a port outside 1-65535.
    """
    m = _SYSLOG_RE.match(text.strip())
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise ValueError(f"audit repository {text!r} is not tls://host:port or udp://host:port")
    return m["scheme"], m["host"].strip("[]"), int(m["port"])


#: Kinds of result destination (one channel module each in ``dicom_node.channels``). A new kind
#: is added here and there.
DESTINATION_KINDS: tuple[str, ...] = ("cstore", "cstore-commit", "stowrs", "webhook", "hl7")
#: SR SOP classes a destination may ask for; ``as-built`` sends what the worker made.
SR_CLASSES: tuple[str, ...] = ("as-built", "comprehensive", "comprehensive-3d", "enhanced")
#: What a webhook may be told about.
WEBHOOK_EVENTS: tuple[str, ...] = ("result", "high-gist", "failure", "dead-letter")
_DICOM_KINDS = ("cstore", "cstore-commit")
_HTTP_KINDS = ("stowrs", "webhook")


class Destination(BaseModel):
    """One place results go: a TOML ``[[destinations]]`` table or one object of the JSON list in
    ``EUSDX_DESTINATIONS``.

    ``address`` is ``AE@host:port`` for ``cstore``/``cstore-commit`` and an ``http(s)://`` URL
    for ``stowrs`` (the DICOMweb service root, e.g. ``https://pacs/dicom-web``) and ``webhook``,
    ``mllp://host:port`` for ``hl7`` (HL7 v2 ORU^R01 over MLLP).
    Every kind shares the export outbox, back-off, dead-letter and audit rows; ``name`` is what
    the outbox, the audit and ``eusdx outbox list`` call the destination.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@:+-]+$",
                      description="unique name (outbox, audit)")
    kind: str = Field(description="one of " + ", ".join(DESTINATION_KINDS))
    address: str = Field(min_length=1, max_length=300,
                         description="AE@host:port, URL, or mllp://host:port (hl7)")
    sr_class: str = Field("as-built", description="SR SOP class sent: " + ", ".join(SR_CLASSES))
    tls: bool = Field(False, description="DICOM TLS (cstore kinds) or MLLP over TLS (hl7); "
                      "https URLs always use TLS")
    tls_ca: Path | None = Field(None, description="CA bundle that verifies the peer's certificate")
    tls_verify: bool = Field(True, description="verify the https peer (keep on in production)")
    tls_client_cert: Path | None = Field(None, description="client certificate (PEM) for https")
    tls_client_key: Path | None = Field(None, description="client key (PEM) for https")
    bearer_token: SecretStr | None = Field(None, description="HTTP Authorization: Bearer token")
    username: str | None = Field(None, description="HTTP basic auth user")
    password: SecretStr | None = Field(None, description="HTTP basic auth password")
    timeout_seconds: float = Field(30.0, gt=0, description="network timeout of one attempt")
    commit_timeout_seconds: float = Field(
        300.0, gt=0, description="cstore-commit: wait this long for the N-EVENT-REPORT, then retry")
    events: tuple[str, ...] = Field(WEBHOOK_EVENTS, description="webhook: events sent")
    include_patient: bool = Field(
        False, description="webhook: add patient name/ID (default: accession number only)")
    receiving_application: str = Field(
        "", max_length=180, pattern=r"^[^|^~\\&\r\n]*$",
        description="hl7: MSH-5 Receiving Application (e.g. RIS)")
    receiving_facility: str = Field(
        "", max_length=180, pattern=r"^[^|^~\\&\r\n]*$",
        description="hl7: MSH-6 Receiving Facility")

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in DESTINATION_KINDS:
            raise ValueError(f"kind {value!r} is not one of {', '.join(DESTINATION_KINDS)}")
        return value

    @field_validator("sr_class")
    @classmethod
    def _sr_class(cls, value: str) -> str:
        if value not in SR_CLASSES:
            raise ValueError(f"sr_class {value!r} is not one of {', '.join(SR_CLASSES)}")
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        for event in value:
            if event not in WEBHOOK_EVENTS:
                raise ValueError(f"event {event!r} is not one of {', '.join(WEBHOOK_EVENTS)}")
        return tuple(value)

    @model_validator(mode="after")
    def _address(self) -> Destination:
        if self.kind in _DICOM_KINDS:
            parse_destination(self.address)
        elif self.kind == "hl7":
            self.mllp  # noqa: B018 (raises ValueError on a bad address)
        elif not re.match(r"^https?://[^\s/]+", self.address):
            raise ValueError(f"destination {self.name!r}: address {self.address!r} is not an "
                             "http(s):// URL")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"destination {self.name!r}: username and password go together")
        if self.bearer_token is not None and self.username is not None:
            raise ValueError(f"destination {self.name!r}: bearer_token or username/password, "
                             "not both")
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError(f"destination {self.name!r}: tls_client_cert and tls_client_key "
                             "go together")
        return self

    @property
    def dicom(self) -> ExportDestination:
        """``AE@host:port`` of a cstore kind.

        Raises
        ------
        ValueError
            The destination is not a DICOM kind.
        """
        if self.kind not in _DICOM_KINDS:
            raise ValueError(f"destination {self.name!r} ({self.kind}) has no AE@host:port")
        return parse_destination(self.address)

    @property
    def mllp(self) -> tuple[str, int]:
        """``(host, port)`` of an ``hl7`` destination (address ``mllp://host:port``).

        Raises
        ------
        ValueError
            Not an ``hl7`` destination, or the address is not ``mllp://host:port``.
        """
        match = re.match(r"^mllp://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):(\d{1,5})/?$", self.address)
        if self.kind != "hl7" or match is None or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(f"destination {self.name!r}: address {self.address!r} is not "
                             "mllp://host:port")
        return match.group(1).strip("[]"), int(match.group(2))


class Settings(BaseSettings):
    """Every key eusdx reads. Environment: ``EUSDX_<KEY>``; TOML: ``<key> = ...``."""

    model_config = SettingsConfigDict(
        env_prefix="EUSDX_",
        extra="forbid",
        validate_default=True,
    )

    # --- DICOM node -------------------------------------------------------------------------
    ae_title: str = Field("EUSDX", min_length=1, max_length=16, description="our called AE title")
    dicom_host: str = Field("0.0.0.0", description="address the DICOM listener binds")
    dicom_port: int = Field(11112, ge=1, le=65535, description="DICOM listen port")
    allowed_aes: CommaList = Field(["*"], description="calling AE titles allowed to send; * = any")
    allowed_hosts: CommaList = Field(
        [], description="optional AE=host pairs; a listed AE is accepted only from that address"
    )
    max_associations: int = Field(20, ge=1, le=1000, description="concurrent associations")
    max_pdu_size: int = Field(
        0, ge=0, description="maximum PDU we receive; 0 = unlimited (fastest with DCMTK peers)"
    )
    acse_timeout: float = Field(30.0, gt=0, description="association negotiation timeout, s")
    dimse_timeout: float = Field(60.0, gt=0, description="DIMSE message timeout, s")
    network_timeout: float = Field(60.0, gt=0, description="idle network timeout, s")
    tls_cert: Path | None = Field(None, description="server certificate (PEM); set to enable TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_ca: Path | None = Field(None, description="CA bundle used to verify client certificates")
    tls_require_client_cert: bool = Field(False, description="reject peers without a valid cert")
    spool_dir: Path = Field(Path("./var/spool"), description="received instances: <study>/<sop>.dcm")
    spool_max_fill_percent: float = Field(
        95.0, gt=0, le=100, description="answer Out of Resources above this disk fill level"
    )
    resend_policy: Literal["reject", "overwrite", "keep-first", "overwrite-if-different"] = Field(
        "keep-first", description="what to do with an instance we already hold"
    )
    study_quiet_seconds: float = Field(30.0, ge=0, description="quiet period before complete")
    study_max_seconds: float = Field(900.0, gt=0, description="hard ceiling for trickling studies")
    route_modalities: CommaList = Field(["US"], description="modalities routed to analysis")
    route_body_parts: CommaList = Field(["STOMACH"], description="BodyPartExamined routed")
    route_series_pattern: str = Field(
        r"(?i)\b(EUS|endosonograph\w*|echoendoscop\w*)\b",
        description="regex on SeriesDescription that also routes a US study",
    )
    retention_days: int = Field(7, ge=0, description="days to keep studies that were not routed")
    spool_retention_days: float = Field(
        30.0, ge=0, description="days an analysed study stays in the spool after its terminal state "
        "(exported, export-failed, failed, dead-letter)"
    )
    spool_clean_fill_percent: float = Field(
        90.0, gt=0, le=100, description="above this disk fill level the oldest settled studies are "
        "deleted early (exported first), before spool_max_fill_percent refuses new ones"
    )
    receive_chunked: bool = Field(
        False,
        description="write incoming data sets to disk while they arrive instead of holding them "
        "in memory (faster for cines; a full disk then aborts the association instead of "
        "answering 0xA700)",
    )
    accept_unknown_sop_classes: bool = Field(
        True,
        description="also store private and unknown storage SOP classes a PACS forwards with a "
        "study (like Orthanc's UnknownSopClassAccepted); they are stored and audited, never "
        "analysed",
    )
    inflate_max_bytes: int = Field(
        2 * 1024**3, ge=1024**2,
        description="largest data set accepted in Deflated Explicit VR Little Endian once "
        "inflated, bytes (answered 0xA700 and audited above it)",
    )
    inflate_max_ratio: float = Field(
        200.0, ge=2,
        description="largest inflated/deflated size ratio accepted (a deflate bomb is refused "
        "with 0xA700)",
    )
    uid_root: str = Field(
        "2.25",
        description="UID root of the objects we create (SR, SC): 2.25 = UUID-derived (PS3.5 "
        "B.2), or the organisation's registered root",
    )

    # --- export -----------------------------------------------------------------------------
    export_destinations: CommaList = Field([], description="AE@host:port list that receives SRs")
    export_max_attempts: int = Field(10, ge=1, description="attempts before dead-letter")
    export_backoff_seconds: float = Field(5.0, gt=0, description="first retry delay; doubles")
    export_backoff_max_seconds: float = Field(600.0, gt=0, description="cap on the retry delay")
    export_tls: bool = Field(
        False, description="export over DICOM TLS (client cert tls_cert/tls_key, CA tls_ca)"
    )
    outbox_sent_retention_days: float = Field(
        7.0, ge=0, description="days a delivered SR stays in the export outbox after every "
        "destination confirmed it"
    )
    outbox_dir: Path | None = Field(
        None, description="export and enqueue outboxes; default <spool_dir>/../outbox"
    )
    destinations: list[Destination] = Field(
        [], description="result destinations (TOML [[destinations]] tables; env: a JSON list); "
        "export_destinations entries are added as kind cstore"
    )
    stow_max_request_bytes: int = Field(
        2 * 1024**3, ge=1024, description="largest STOW-RS request accepted (413 above)"
    )
    export_tls_check_hostname: bool = Field(
        True, description="with export_tls: the destination's certificate must name its host/IP"
    )

    # --- queue and worker -------------------------------------------------------------------
    broker_url: str = Field("", description="Celery broker; empty = embedded, no server")
    bundle: Path = Field(Path("./var/bundles/current"), description="model bundle the worker loads")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="inference device")
    cine_max_frames: int = Field(8, ge=1, description="frames sampled evenly from a cine loop")
    analysis_processes: int = Field(
        0, ge=0, description="CPU cores one analysis uses: frame worker processes and torch threads "
        "(0 = every usable core; 1 = in the worker process)"
    )
    task_time_limit_seconds: float = Field(900.0, gt=0, description="hard limit of one analysis")
    task_max_deliveries: int = Field(3, ge=1, description="deliveries before a study dead-letters")
    sr_on_no_analysis: bool = Field(False, description="write a short SR when nothing was analysable")
    secondary_capture: bool = Field(False, description="also send an annotated Secondary Capture")
    sr_sop_class: Literal["comprehensive", "comprehensive-3d"] = Field(
        "comprehensive",
        description="SR storage class: comprehensive (drawn by OHIF, Stone) or comprehensive-3d (IHE AIR)",
    )
    queue_dir: Path = Field(
        Path("./var/queue"), description="embedded queue (no broker): pending/running study files"
    )
    bundle_trusted_keys: CommaList = Field(
        [], description="Ed25519 public keys (PEM files) whose bundle signatures are accepted"
    )
    bundle_sha256: str = Field(
        "", description="optional pin: SHA-256 of the bundle manifest the worker may load"
    )

    # --- audit, HTTP, logs ------------------------------------------------------------------
    database_url: str = Field("sqlite:///./var/audit.db", description="SQLAlchemy URL of the audit DB")
    audit_hmac_secret: SecretStr = Field(
        SecretStr("eusdx-embedded-default-secret"),
        description="key for hashing patient identifiers; set your own in production",
    )
    audit_hmac_key_path: Path | None = Field(
        None, description="per-installation HMAC key file (eusdx db upgrade creates it); "
        "default <spool_dir>/../keys/audit-hmac.json"
    )
    dev_mode: bool = Field(
        False, description="demo/development only: allow the built-in audit key and unsigned bundles"
    )
    audit_anchor_dir: Path | None = Field(
        None, description="signed audit chain anchors; default <spool_dir>/../anchors"
    )
    audit_anchor_key_path: Path | None = Field(
        None, description="Ed25519 key that signs anchors; default <spool_dir>/../keys/anchor.pem"
    )
    audit_anchor_interval_seconds: float = Field(
        300.0, gt=0, description="eusdx serve writes a chain anchor this often and at shutdown"
    )
    audit_anchor_syslog: str = Field(
        "/dev/log", description="syslog socket that also receives each anchor; empty = none"
    )
    atna_repository: str = Field(
        "", description="IHE ATNA audit repository that receives the audit trail as DICOM audit "
        "messages (PS3.15 A.5) over syslog: tls://host:port (RFC 5425) or udp://host:port "
        "(RFC 5426); empty = none"
    )
    atna_tls_ca: Path | None = Field(
        None, description="CA bundle that verifies the audit repository's certificate (tls://); "
        "unset = the system store"
    )
    atna_tls_cert: Path | None = Field(
        None, description="our client certificate (PEM) for the audit repository (ATNA node "
        "authentication)"
    )
    atna_tls_key: Path | None = Field(None, description="key (PEM) of atna_tls_cert")
    atna_audit_source_id: str = Field(
        "", max_length=64, description="AuditSourceID of our messages; empty = ae_title"
    )
    atna_enterprise_site_id: str = Field(
        "", max_length=64, description="AuditEnterpriseSiteID of our messages (the hospital); "
        "empty = left out"
    )
    atna_spool_dir: Path | None = Field(
        None, description="audit messages waiting for the repository and the sender's cursor; "
        "default <spool_dir>/../atna"
    )
    atna_interval_seconds: float = Field(
        5.0, gt=0, description="eusdx serve turns new audit rows into messages and sends them "
        "this often"
    )
    atna_batch_rows: int = Field(
        500, ge=1, le=100_000, description="audit rows turned into messages per batch"
    )
    atna_timeout_seconds: float = Field(
        10.0, gt=0, description="network timeout of the audit repository connection, s"
    )
    http_host: str = Field("127.0.0.1", description="address of the HTTP API")
    http_port: int = Field(8080, ge=0, le=65535, description="health, metrics, worklist, QA API")
    api_tokens: CommaList = Field(
        [], description="name:role:sha256(token) entries; roles worklist, qa, admin"
    )
    gist_priority_threshold: float = Field(
        0.7, ge=0, le=1, description="worklist priority flag above this GIST probability"
    )
    dashboard_session_key: SecretStr = Field(
        SecretStr(""),
        description="key signing dashboard session cookies; empty = random per start (log in again)",
    )
    dashboard_session_minutes: int = Field(
        480, ge=5, le=1440, description="dashboard session lifetime after login (minutes)"
    )
    dashboard_secure_cookie: bool = Field(
        False, description="mark the session cookie Secure even when the request came over HTTP "
        "(set when TLS ends at a proxy in front of eusdx)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="json lines or plain text")

    # Set by load_settings; not a user key.
    config_file: Path | None = Field(None, exclude=True, description="TOML file that was read")

    @field_validator(
        "allowed_aes",
        "allowed_hosts",
        "export_destinations",
        "route_modalities",
        "route_body_parts",
        "api_tokens",
        "bundle_trusted_keys",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("export_destinations")
    @classmethod
    def _check_destinations(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_destination(item)
        return value

    @model_validator(mode="after")
    def _unique_destination_names(self) -> Settings:
        seen: set[str] = set()
        for dest in self.result_destinations:
            if dest.name in seen:
                raise ValueError(f"destination name {dest.name!r} is used twice")
            seen.add(dest.name)
        return self

    @field_validator("atna_repository")
    @classmethod
    def _check_atna(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_syslog_endpoint(value)
        return value

    @model_validator(mode="after")
    def _atna_tls_pair(self) -> Settings:
        if (self.atna_tls_cert is None) != (self.atna_tls_key is None):
            raise ValueError("atna_tls_cert and atna_tls_key go together")
        return self

    @field_validator("route_series_pattern")
    @classmethod
    def _check_regex(cls, value: str) -> str:
        re.compile(value)
        return value

    @field_validator("uid_root")
    @classmethod
    def _check_uid_root(cls, value: str) -> str:
        from eusdx.uids import check_root

        return check_root(value)

    @field_validator("bundle_sha256")
    @classmethod
    def _check_pin(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("bundle_sha256 must be 64 hex digits (or empty)")
        return value

    @property
    def hmac_key_path(self) -> Path:
        """``audit_hmac_key_path``, or ``keys/audit-hmac.json`` next to the spool when unset."""
        if self.audit_hmac_key_path is not None:
            return self.audit_hmac_key_path
        return self.spool_dir.parent / "keys" / "audit-hmac.json"

    @property
    def anchor_dir(self) -> Path:
        """``audit_anchor_dir``, or ``anchors`` next to the spool when unset."""
        return self.audit_anchor_dir if self.audit_anchor_dir is not None else self.spool_dir.parent / "anchors"

    @property
    def anchor_signing_key_path(self) -> Path:
        """``audit_anchor_key_path``, or ``keys/anchor.pem`` next to the spool when unset."""
        if self.audit_anchor_key_path is not None:
            return self.audit_anchor_key_path
        return self.spool_dir.parent / "keys" / "anchor.pem"

    @property
    def result_destinations(self) -> list[Destination]:
        """Every destination: ``export_destinations`` (kind ``cstore``, named ``AE@host:port``,
        DICOM TLS when ``export_tls``) followed by ``destinations``."""
        legacy = [Destination.model_validate({"name": d, "kind": "cstore", "address": d,
                                              "tls": self.export_tls})
                  for d in self.export_destinations]
        return legacy + list(self.destinations)

    def destination(self, name: str) -> Destination | None:
        """The destination called ``name``, or ``None``."""
        return next((d for d in self.result_destinations if d.name == name), None)

    @property
    def atna_spool_path(self) -> Path:
        """``atna_spool_dir``, or ``atna`` next to the spool when unset."""
        return self.atna_spool_dir if self.atna_spool_dir is not None else self.spool_dir.parent / "atna"

    @property
    def outbox_path(self) -> Path:
        """``outbox_dir``, or ``outbox`` next to the spool when unset."""
        return self.outbox_dir if self.outbox_dir is not None else self.spool_dir.parent / "outbox"

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# pydantic-settings builds sources from the class, so the TOML path reaches it through this slot,
# set only inside load_settings.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the configuration once.

    Parameters
    ----------
    config_file
        Optional TOML file; its keys are the lower-case names of the ``EUSDX_`` variables.
    **overrides
        Values that win over everything (tests, CLI flags).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, or a value is invalid; the message names the key.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"configuration file {config_file} does not exist")
    _TOML_FILE["path"] = Path(config_file) if config_file is not None else None
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"invalid configuration key {key!r}: {first['msg']}") from exc
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"cannot read configuration: {exc}") from exc
    finally:
        _TOML_FILE["path"] = None
    settings.config_file = Path(config_file) if config_file is not None else None
    return settings
