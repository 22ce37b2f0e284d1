"""The WebSocket socket budget of a worker (ADR 0452), read from the open-file limit where it is used."""

from __future__ import annotations

import resource

from tsmesh_gateway.stream.socket_budget import FD_HEADROOM, max_sockets, raise_open_file_limit, socket_budget


def test_the_budget_is_the_file_limit_less_the_headroom(file_limit: tuple[int, int]) -> None:
    soft, _ = file_limit
    assert FD_HEADROOM == 1024 + 4096
    assert socket_budget() == max(1, soft - min(FD_HEADROOM, soft // 4))


def test_a_small_limit_keeps_three_quarters_for_sockets_not_one(file_limit: tuple[int, int]) -> None:
    _, hard = file_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    assert socket_budget() == 768
    raise_open_file_limit()  # what the gateway does at start: soft up to the hard limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard


def test_a_configured_maximum_is_kept_below_the_budget_and_none_means_the_budget(file_limit: tuple[int, int]) -> None:
    _, hard = file_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    assert max_sockets(None) == 768
    assert max_sockets(7) == 7
    assert max_sockets(10**9) == 768
