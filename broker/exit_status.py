"""Exit statuses of the `tidelog` server commands (as the client commands use them)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
