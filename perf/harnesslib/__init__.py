"""The parts of perf/harness.py, one job per module (perf/README.md lists them)."""
