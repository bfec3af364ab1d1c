"""HTTP out: to producers' endpoints (where a webhook may go: public addresses only; one bounded
attempt to deliver it), to the storage of durable copies (`storage.py`), and sockets enough for
every thread. May import: the core modules."""
