"""Executors: what runs stage work, on this host (local/) or on Dramatiq workers (remote/), behind one
small typed protocol (protocol.py). Imports config, models, ratelimit and stages; never core/ or cli/."""
