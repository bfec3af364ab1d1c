"""A job's life: accept a message, then the engine runs what the dispatcher grants (submit,
wait, outcomes, webhooks). May import the layers below: core, spec, net, astria, store, runtime."""
