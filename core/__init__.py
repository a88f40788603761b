"""The shared service core: what the HTTP API, the workers and the CLI all read.

Settings (`VIDEOPOET_*`), the video records (`store`), their files (`artifacts`: a folder or an
S3 bucket), characters (`characters`), the queue names and job handles (`queue`), API keys
(`keys`) and the redaction of secrets in URLs (`redact`).
Torch-free; it imports only the torch-free parts of `models` (the task spec, the model card).
"""
