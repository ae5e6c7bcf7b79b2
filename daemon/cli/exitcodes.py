"""Exit codes, in one place (the contract fixes them)."""

OK = 0
FAILURE = 1  # a runtime failure
USAGE = 2  # bad usage or invalid input
LOCKED = 75  # another daemon already owns the spool (EX_TEMPFAIL)
