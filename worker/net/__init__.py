"""HTTP to producers' endpoints: where a webhook may go (public addresses only) and one
bounded attempt to deliver it. May import: the core modules (errors, settings, records)."""
