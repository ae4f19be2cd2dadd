"""cartflow: event-driven e-commerce data pipeline (S3 -> debounce -> batch -> Spark -> KPIs)."""

__version__ = "0.1.0"
