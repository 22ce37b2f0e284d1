"""The fast path's precomputed header pieces say exactly what the general code says."""

from __future__ import annotations

import re

from tsmesh_gateway.edge import new_request_id
from tsmesh_gateway.rate_leasing import rate_header_bytes, rate_headers


def test_rate_header_bytes_match_rate_headers_for_reused_and_fresh_values() -> None:
    resets = [-3.5, -0.2, 0.0, 0.01, 0.99, 1.0, 1.2, 62.5, 63.0, 63.01, 64.0, 99.9, 3_600.0, 1e9]
    limits = [1, 10, 10_000_000, *range(2_000, 3_100)]  # more distinct limits than are kept
    for limit in limits:
        for remaining in (0, 7, limit):
            for reset in resets:
                rate = (limit, remaining, reset)
                expected = [(k.lower().encode(), v.encode()) for k, v in rate_headers(rate).items()]
                assert rate_header_bytes(rate) == expected, rate
    again = rate_header_bytes((10, 3, 0.5))  # reused pieces are equal, the list is the caller's own
    again.append((b"x", b"y"))
    assert rate_header_bytes((10, 3, 0.5)) == [
        (b"ratelimit-limit", b"10"),
        (b"ratelimit-remaining", b"3"),
        (b"ratelimit-reset", b"1"),
    ]


def test_request_ids_are_32_hex_digits_and_distinct() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert len({i[:20] for i in ids}) == 1  # one per-process prefix, a counter after it
