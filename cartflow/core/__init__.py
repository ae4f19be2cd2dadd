"""The core every runtime shares: settings, models, the resource spec, AWS clients, the batch
table, errors. It imports nothing else of the project (the import contracts in
pyproject.toml hold every layer to that)."""
