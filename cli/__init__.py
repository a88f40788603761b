"""The `videopoet` command: the one place that wires the HTTP API, the workers and the models
together (serve, worker, generate, keys, train, eval)."""
