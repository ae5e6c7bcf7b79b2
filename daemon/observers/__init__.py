"""Observers of the supervisor: hooks, metrics, the timeline, alerts, sd_notify, logs, the runtime view.
They read what the loop hands them; none of them changes the spool's state."""
