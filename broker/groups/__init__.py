"""The consumer-group coordinator: a pure core (no trio, no I/O) and its record formats.

`coordinator.GroupCoordinator` is the entry point; `records` holds the `__consumer_offsets`
record layouts and the group-to-partition hash.
"""
