"""The KPI dashboard (`cartflow dashboard`): a local web page over the pipeline's read models.

``data`` builds one view model from Deps (DynamoDB via cartflow.ops.views, the Delta
``kpis/`` tables when the ``deltalake`` package is installed); ``charts`` draws it as
server-side SVG; ``server`` serves it with the standard library's HTTP server.
"""
