"""Benchmarks. `python -m bench run` measures tidelog and its peers side by side and writes a
report (see `bench.__main__`); `python -m bench.codec`, `bench.storage` and `bench.broker`
measure one layer each. Every one has `--smoke`, which runs tiny sizes in seconds so that the
test suite keeps it working."""
