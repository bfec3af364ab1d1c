"""Tenants as configuration: `TENANTS_FILE` (JSON, or YAML) registers the producer teams that
share a deployment, each with its API tokens (kept only as sha256 hashes), its webhook secrets,
its weight and cap in the dispatcher's turns, and the tunes it may use:

    {"tenants": {"app": {"token_sha256": ["<hex sha256 of an API token>"],
                         "webhook_secret": "whsec_...", "weight": 3, "max_in_flight": 50,
                         "tune_ids": [4242, 111111], "storage_url": "s3://app-images/astria"}}}

With a file, a job of a tenant it does not name is refused, and so is a tune not in the tenant's
`tune_ids` (absent: any); its webhooks are signed with its own secrets (a list, newest first,
signs with each while a rotation lasts: Standard Webhooks' receivers accept any one of them).
Without one, the `TENANT_*` settings and `WEBHOOK_SECRET` apply to any tenant name, as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from worker.errors import ConfigError, InvalidSpec

#: A tenant's name, as a spec gives it (worker.spec) and as the file keys it.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: A durable copies' store (STORAGE_URL, a tenant's `storage_url`): a directory or an S3 bucket.
STORAGE_URL_PATTERN = r"^(file:///.+|s3://[a-z0-9][a-z0-9.-]{1,62}(/[^?#]*)?)$"
#: Bigger than any list of teams and their tokens; a file past it is a mistake.
MAX_FILE_BYTES = 1_000_000

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def webhook_secret_rule(raw: str) -> str:
    """The rule of a `whsec_...` secret (WEBHOOK_SECRET and each tenant's): ValueError if not."""
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not raw.startswith("whsec_") or len(key) < 16:
        raise ValueError("must be whsec_ followed by the base64 of a key of 16+ bytes")
    return raw


class Tenant(BaseModel):
    """One tenant's entry in TENANTS_FILE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_sha256: list[Sha256] = Field(default_factory=list, max_length=100)
    webhook_secret: list[SecretStr] = Field(default_factory=list, max_length=10)
    weight: float = Field(1.0, gt=0, le=1000)
    max_in_flight: int | None = Field(None, ge=0)  #: None: TENANT_DEFAULT_MAX_IN_FLIGHT
    tune_ids: frozenset[int] | None = None  #: None: any tune
    #: Where its images' durable copies go (None: STORAGE_URL).
    storage_url: str | None = Field(None, pattern=STORAGE_URL_PATTERN)

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("webhook_secret")
    @classmethod
    def _secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            webhook_secret_rule(secret.get_secret_value())
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: dict[Annotated[str, StringConstraints(pattern=TENANT_PATTERN)], Tenant]


@dataclass(frozen=True)
class Tenants:
    """The registry: empty (no TENANTS_FILE) means any tenant name, as before."""

    named: dict[str, Tenant] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)  #: sha256 hex -> tenant

    @property
    def registered(self) -> bool:
        return bool(self.named)

    def for_token(self, token: str) -> str | None:
        """The tenant an API token belongs to (looked up by its hash: a token is never kept)."""
        return self.for_digest(token_digest(token))

    def for_digest(self, digest: str) -> str | None:
        """The tenant of a token's `token_digest`."""
        return self.by_token.get(digest)

    def check(self, tenant: str, tune_id: int) -> None:
        """InvalidSpec, naming the field, when a registry is given and refuses the job."""
        if not self.named:
            return
        entry = self.named.get(tenant)
        if entry is None:
            raise InvalidSpec(f"tenant: {tenant!r} is not registered (TENANTS_FILE)")
        if entry.tune_ids is not None and tune_id not in entry.tune_ids:
            raise InvalidSpec(f"tune_id: {tune_id} is not one of tenant {tenant!r}'s tune_ids "
                              "(TENANTS_FILE)")

    def secrets(self, tenant: str) -> list[str]:
        """The tenant's own webhook secrets, newest first; [] when it has none."""
        entry = self.named.get(tenant)
        return [s.get_secret_value() for s in entry.webhook_secret] if entry else []

    def storage_url(self, tenant: str) -> str | None:
        entry = self.named.get(tenant)
        return entry.storage_url if entry else None

    def weights(self) -> dict[str, float]:
        return {name: t.weight for name, t in self.named.items()}

    def caps(self) -> dict[str, int]:
        return {name: t.max_in_flight for name, t in self.named.items()
                if t.max_in_flight is not None}


def token_digest(token: str) -> str:
    """How a token is kept and looked up: its sha256, in hex (TENANTS_FILE's token_sha256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_tenants(path: Path | None) -> Tenants:
    """Read and check TENANTS_FILE (JSON; YAML when it ends in .yaml/.yml); ConfigError naming
    the file and each problem. A token hash given to two tenants is refused."""
    if path is None:
        return Tenants()
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"TENANTS_FILE {path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text()
        raw = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        parsed = _File.model_validate(raw)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, ValidationError):
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        else:
            detail = str(exc)[:300]
        raise ConfigError(f"TENANTS_FILE {path}: {detail}") from None
    by_token: dict[str, str] = {}
    for name, tenant in parsed.tenants.items():
        for digest in tenant.token_sha256:
            if by_token.setdefault(digest, name) != name:
                raise ConfigError(f"TENANTS_FILE {path}: tenants.{name}.token_sha256: a token "
                                  f"hash also given to tenant {by_token[digest]!r}")
    if not parsed.tenants:
        raise ConfigError(f"TENANTS_FILE {path}: tenants: names no tenant")
    return Tenants(dict(parsed.tenants), by_token)
