"""Operator actions and read models (list, retry, audit; batches, files, KPIs), over ``Deps``."""
