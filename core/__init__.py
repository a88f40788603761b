"""The shared service core: what the HTTP API, the workers and the CLI all read.

Settings (`VIDEOPOET_*`), the video records and their artifacts (`store`), the queue names and
job handles (`queue`), API keys (`keys`) and the redaction of secrets in URLs (`redact`).
Torch-free; it imports only the torch-free parts of `models` (the task spec, the model card).
"""
