"""flowbatch's benchmark harness: ``python -m bench`` (or ``bash bench/run.sh``).

Every comparison is measured side by side in one run and written to ``BENCHMARKS.md``
with the machine it ran on. See ``python -m bench --help``.
"""
