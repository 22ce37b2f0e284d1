"""The bulk bucket encoder produces exactly upb's bytes (property-based) and fills match Python."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from tsmesh.v1 import query_pb2

from tsmesh_query import wire

int64 = st.one_of(
    st.sampled_from([0, 1, -1, 127, 128, 16383, 16384, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1)
)
value = st.one_of(st.floats(allow_nan=True), st.sampled_from([0.0, -0.0, math.inf]))
bucket = st.tuples(int64, value, st.booleans(), int64)


@settings(max_examples=200, deadline=None)
@given(buckets=st.lists(bucket, max_size=40), labels=st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
def test_encoded_buckets_equal_upb_serialization(buckets, labels) -> None:
    expected = query_pb2.SeriesResult(metric="m", labels=labels)
    for start, v, has, count in buckets:
        if has:
            expected.buckets.add(start_ns=start, value=v, count=count)
        else:
            expected.buckets.add(start_ns=start, count=count)
    blob, ends = wire.encode_buckets(
        np.array([b[0] for b in buckets], dtype=np.int64),
        np.array([b[1] for b in buckets], dtype=np.float64),
        np.array([b[2] for b in buckets], dtype=np.bool_),
        np.array([b[3] for b in buckets], dtype=np.int64),
    )
    assert len(ends) == len(buckets) and (not buckets or int(ends[-1]) == len(blob))
    head = wire.series_head("m", labels)
    assert head + blob == expected.SerializeToString()
    response = query_pb2.QueryRangeResponse(resolution=query_pb2.RESOLUTION_1M)
    response.series.append(expected)
    decoded = query_pb2.QueryRangeResponse.FromString(wire.encode_response([head], [blob], query_pb2.RESOLUTION_1M))
    assert decoded.SerializeToString() == response.SerializeToString()
