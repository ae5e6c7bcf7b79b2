"""The `podspool` command line and its read-only views (status, dashboard, live, doctor, preview, plan).
May import everything in daemon/; nothing in daemon/ imports it but the entry point."""
