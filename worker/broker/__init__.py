"""Celery: the app, the kombu transport that cannot lose a message, intake checks, revoke.
May import: everything below it (core, spec, net, astria, store, runtime, flow, edge)."""
