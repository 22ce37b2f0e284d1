"""How ingest authenticates to Kafka: TLS and SASL settings shared by producer, consumer and admin.

``TSMESH_KAFKA_SECURITY_PROTOCOL`` is PLAINTEXT (dev), SSL, SASL_PLAINTEXT or SASL_SSL. TLS trusts
``TSMESH_KAFKA_SSL_CAFILE`` (the system store when unset) and presents a client certificate when
``TSMESH_KAFKA_SSL_CERTFILE``/``_KEYFILE`` are set. SASL uses ``TSMESH_KAFKA_SASL_MECHANISM`` (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512) with a username and a password read from ``TSMESH_KAFKA_SASL_PASSWORD_FILE``
(a mounted Secret) or ``TSMESH_KAFKA_SASL_PASSWORD``; the password is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsmesh_common.config import ConfigError, Env

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings of every Kafka client of the process."""

    protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Env) -> KafkaSecurity:
        protocol = env.get_str("TSMESH_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise ConfigError("TSMESH_KAFKA_SECURITY_PROTOCOL", f"must be one of {', '.join(PROTOCOLS)}")
        mechanism = username = password = None
        if protocol.startswith("SASL_"):
            mechanism = env.get_str("TSMESH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper()
            if mechanism not in MECHANISMS:
                raise ConfigError("TSMESH_KAFKA_SASL_MECHANISM", f"must be one of {', '.join(MECHANISMS)}")
            username = env.raw("TSMESH_KAFKA_SASL_USERNAME")
            if not username:
                raise ConfigError("TSMESH_KAFKA_SASL_USERNAME", f"is required with {protocol}")
            password = _password(env)
        certfile = env.raw("TSMESH_KAFKA_SSL_CERTFILE")
        keyfile = env.raw("TSMESH_KAFKA_SSL_KEYFILE")
        if bool(certfile) != bool(keyfile):
            raise ConfigError("TSMESH_KAFKA_SSL_KEYFILE", "client certificate and key are set together")
        return cls(
            protocol=protocol,
            ssl_cafile=env.raw("TSMESH_KAFKA_SSL_CAFILE"),
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def _password(env: Env) -> str:
    path = env.raw("TSMESH_KAFKA_SASL_PASSWORD_FILE")
    if path:
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError("TSMESH_KAFKA_SASL_PASSWORD_FILE", f"cannot be read: {exc.strerror}") from None
    else:
        secret = env.raw("TSMESH_KAFKA_SASL_PASSWORD") or ""
    if not secret:
        raise ConfigError("TSMESH_KAFKA_SASL_PASSWORD_FILE", "a SASL password is required")
    return secret
