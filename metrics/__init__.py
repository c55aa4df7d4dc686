"""Prometheus metrics for bakup: definitions, the event listener that keeps them current, and
their exposition (HTTP /metrics for the worker; Pushgateway or a node_exporter textfile for a
one-shot `bakup backup`). The engine knows nothing of this package: it only emits events."""
