"""The local executor: long-lived worker processes per stage, fed over pipes, guarded by psutil.
Imports executors.protocol, ratelimit and stages only."""
