"""podspool's daemon: the supervisor, the spool, the inbox, the pools and the command line."""
