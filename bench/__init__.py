"""cartflow benchmark: the Spark jobs against DuckDB and polars on the same seeded input.

Run ``python -m bench --help`` (from the repo root, with the project venv); see bench/README.md.
"""
