"""Benchmarks: each module runs with `python -m bench.<name>`, and `--smoke` runs tiny sizes
in a few seconds so the test suite can keep every benchmark working."""
