"""One replica's state, PURE: no trio, no clock, no files (see `state.py`)."""
