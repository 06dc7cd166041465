"""Benchmarks: generated CBF data, a plain-Python floor, a naive Beam pipeline and a runner.

`python -m benchmarks.run` runs them side by side against the local emulator; see benchmarks/README.md.
"""
