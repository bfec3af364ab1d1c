"""Astria and its rules: the client (one request, typed errors), its prompt object, where a
prompt is POSTed, when to poll, when to retry. May import: the core modules and `worker.spec`."""
