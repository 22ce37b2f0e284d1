"""The push protocols' translation into tsmesh points: Prometheus remote_write 1.0 and 2.0, OTLP
metrics over HTTP, InfluxDB v1 write; each fills a bounded :class:`~tsmesh_common.pointwire.RequestWriter`
off the event loop (:mod:`tsmesh_gateway.push.offload`)."""
