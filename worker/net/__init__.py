"""HTTP to producers' endpoints: where a webhook may go (public addresses only), one bounded
attempt to deliver it, and sockets enough for every thread. May import: the core modules."""
