"""The gateway's configuration is read from the environment it is given, and nothing else: each
default is written once (in the config classes), and OS state such as the open-file limit is read
where it is used (tests/gateway/test_socket_budget.py), not while parsing."""

from __future__ import annotations

import resource

import pytest

from tsmesh_common.config import ConfigError
from tsmesh_gateway.config import GatewayConfig, Limit, StreamConfig


def test_from_env_does_not_depend_on_the_process_file_limit(file_limit: tuple[int, int]) -> None:
    _, hard = file_limit
    environ: dict[str, str] = {}
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    small = GatewayConfig.from_env(environ)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    large = GatewayConfig.from_env(environ)
    assert small == large
    assert small.stream.max_connections is None  # "the socket budget", resolved by the worker


def test_unset_stream_variables_take_the_class_defaults() -> None:
    assert GatewayConfig.from_env({}).stream == StreamConfig()
    moved = GatewayConfig.from_env({"TSMESH_HTTP_PORT": "9000"})
    assert (moved.http_port, moved.stream.port) == (9000, 9001)


def test_stream_variables_are_read() -> None:
    stream = GatewayConfig.from_env(
        {
            "TSMESH_GATEWAY_WS_AUTH_TIMEOUT_SECONDS": "2.5",
            "TSMESH_GATEWAY_WS_PING_SECONDS": "3",
            "TSMESH_GATEWAY_WS_IDLE_TIMEOUT_SECONDS": "9",
            "TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS": "11",
            "TSMESH_GATEWAY_WS_COALESCE_SECONDS": "5",  # capped at the latency budget
            "TSMESH_GATEWAY_WS_MAX_SUBSCRIPTIONS": "12",
            "TSMESH_GATEWAY_WS_REAUTH_SECONDS": "13",
            "TSMESH_GATEWAY_WS_LISTENER": "false",
            "TSMESH_GATEWAY_WS_PORT": "7001",
            "TSMESH_GATEWAY_WS_MAX_CONNECTIONS": "7",
            "TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_TOKEN": "14",
            "TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_ADDRESS": "15",
            "TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS": "2:4",
        }
    ).stream
    assert stream == StreamConfig(
        auth_timeout_seconds=2.5,
        ping_interval_seconds=3.0,
        idle_timeout_seconds=9.0,
        send_queue_points=11,
        coalesce_seconds=StreamConfig().coalesce_seconds,
        max_subscriptions=12,
        reauth_seconds=13.0,
        listener=False,
        port=7001,
        max_connections=7,
        max_connections_per_token=14,
        max_connections_per_address=15,
        handshakes_per_address=Limit(2.0, 4),
    )


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_maximum_of_sockets_names_its_variable(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env({"TSMESH_GATEWAY_WS_MAX_CONNECTIONS": value})
    assert raised.value.variable == "TSMESH_GATEWAY_WS_MAX_CONNECTIONS"
