"""What listens: the callback receiver (gunicorn), Prometheus metrics and the health check.
May import: everything below it (core, spec, net, astria, store, runtime, flow)."""
