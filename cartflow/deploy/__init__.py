"""The production path: the CloudFormation template generated from the resource spec
(``template.py``), the environment the functions and jobs need (``environment.py``) and
``cartflow deploy`` (``ship.py``). See docs/deploy.md."""
