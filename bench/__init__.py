"""cartflow benchmark: the Spark jobs against the DuckDB oracle on the same seeded input.

Run ``python -m bench --help`` (from the repo root, with the project venv); see bench/README.md.
"""
