"""Kafka TLS/SASL settings: read from the environment, handed to every aiokafka client."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tsmesh_common.config import ConfigError, Env
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.kafka_security import KafkaSecurity


def test_plaintext_by_default() -> None:
    cfg = IngestConfig.from_env({})
    assert cfg.kafka.security == KafkaSecurity()
    assert cfg.kafka.security.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert cfg.kafka.min_insync_replicas == 1


def test_sasl_ssl_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    cfg = IngestConfig.from_env(
        {
            "TSMESH_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "TSMESH_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "TSMESH_KAFKA_SASL_USERNAME": "tsmesh-ingest",
            "TSMESH_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "TSMESH_KAFKA_MIN_INSYNC_REPLICAS": "2",
            "TSMESH_KAFKA_REPLICATION": "3",
        }
    )
    kwargs = cfg.kafka.security.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("tsmesh-ingest", "s3cret")
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert (cfg.kafka.replication, cfg.kafka.min_insync_replicas) == (3, 2)
    assert "s3cret" not in repr(cfg.kafka)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"TSMESH_KAFKA_SECURITY_PROTOCOL": "tls"}, "TSMESH_KAFKA_SECURITY_PROTOCOL"),
        ({"TSMESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "TSMESH_KAFKA_SASL_USERNAME"),
        (
            {"TSMESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TSMESH_KAFKA_SASL_USERNAME": "u"},
            "TSMESH_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {"TSMESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TSMESH_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "TSMESH_KAFKA_SASL_MECHANISM",
        ),
        ({"TSMESH_KAFKA_SECURITY_PROTOCOL": "SSL", "TSMESH_KAFKA_SSL_CERTFILE": "/c"}, "TSMESH_KAFKA_SSL_KEYFILE"),
    ],
)
def test_incomplete_settings_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        KafkaSecurity.from_env(Env(environ))
