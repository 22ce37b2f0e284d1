"""Config from the environment: typed, validated, one-line errors naming the variable, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tsmesh_common.config import CommonConfig, ConfigError, Env, load_or_exit


def common(environ: dict[str, str]) -> CommonConfig:
    return CommonConfig.from_env(environ, service="x", grpc_port=50051, metrics_port=9101)


def test_defaults_are_local() -> None:
    cfg = common({})
    assert (cfg.grpc_port, cfg.metrics_port, cfg.production) == (50051, 9101, False)
    assert cfg.redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"TSMESH_GRPC_PORT": "http"}, "TSMESH_GRPC_PORT"),
        ({"TSMESH_GRPC_PORT": "70000"}, "TSMESH_GRPC_PORT"),
        ({"TSMESH_LOG_LEVEL": "LOUD"}, "TSMESH_LOG_LEVEL"),
        ({"TSMESH_SHUTDOWN_GRACE_SECONDS": "nan"}, "TSMESH_SHUTDOWN_GRACE_SECONDS"),
        ({"TSMESH_ENV": "staging"}, "TSMESH_ENV"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        common(environ)
    assert err.value.variable == variable
    assert str(err.value).startswith(f"{variable}: ")


def test_production_refuses_insecure_defaults() -> None:
    with pytest.raises(ConfigError, match="TSMESH_REDIS_URL: must be set explicitly in production"):
        common({"TSMESH_ENV": "production"})
    assert common({"TSMESH_ENV": "production", "TSMESH_REDIS_URL": "redis://redis:6379/0"}).production


def test_typed_readers() -> None:
    env = Env({"A": " 3 ", "B": "yes", "C": "a, b,,c", "D": "maybe"})
    assert env.get_int("A", 0) == 3
    assert env.get_bool("B", False) is True
    assert env.get_list("C") == ("a", "b", "c")
    with pytest.raises(ConfigError, match="D: must be true or false"):
        env.get_bool("D", False)
    with pytest.raises(ConfigError, match="E: is required"):
        env.required("E")


def test_load_or_exit_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        load_or_exit(common, {"TSMESH_METRICS_PORT": "-1"})
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == "configuration error: TSMESH_METRICS_PORT: must be >= 0, got -1\n"


@pytest.mark.parametrize("service", ["tsmesh_auth", "tsmesh_ingest", "tsmesh_query"])
def test_a_service_with_a_bad_variable_exits_2_naming_it(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMESH_")}
    env["TSMESH_GRPC_PORT"] = "not-a-port"
    done = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TSMESH_GRPC_PORT" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
