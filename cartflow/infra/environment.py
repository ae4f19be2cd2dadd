"""Which ``CARTFLOW_*`` settings the functions and the Spark jobs need, on every target.

One list per kind of process, used by the IaC (cloudformation.py sets exactly these on every Lambda
function / the ECS container) and checked by tests/unit/test_deploy_parity.py against the code
(every Settings field the functions/jobs read is here or exempted below with a reason) and
against docker-compose.yml (which sets the same names for its containers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Settings fields the four functions read (services/ + cartflow/core/aws.py + derived ARNs).
FUNCTION_SETTINGS: tuple[str, ...] = (
    "region",
    "account_id",  # state_machine_arn is built from region + account id + name
    "bucket",
    "events_table",
    "batch_chunks_table",
    "idempotency_table",
    "state_machine",
    "debounce_seconds",
    "max_files_per_chunk",
    "event_retention_days",
    "max_execution_seconds",
    "failure_topic",  # the controller alerts executions that ended outside the Catch
    "state_machine_target",  # local: the controller also watches worker heartbeats
    "job_heartbeat_seconds",
    "max_auto_reruns",
)

# Settings fields the Spark jobs read (spark/jobs/ + cartflow/core/aws.py).
JOB_SETTINGS: tuple[str, ...] = (
    "region",
    "bucket",
    "category_kpis_table",
    "order_kpis_table",
    "max_quarantined_share",  # validation: a batch quarantining more than this fails
    "job_results_table",  # spark.jobs.__main__ puts its result there for the AWS state machine
    "spark_driver_memory",
    "spark_shuffle_partitions",
    "spark_adaptive_execution",
)

# Read by the code but deliberately not set by the IaC: the default (None / the image's
# ENV) is the AWS behaviour. Keys are Settings fields, values say why.
NOT_ON_AWS: dict[str, str] = {
    "aws_endpoint_url": "emulator only; None means real AWS endpoints",
    "spark_driver_host": "compose client mode against a standalone cluster; Fargate runs local[*]",
    "spark_driver_bind_address": "compose client mode only",
    "spark_driver_port": "compose client mode only",
    "spark_block_manager_port": "compose client mode only",
    # Off everywhere until io.delta:delta-storage-s3-dynamodb can be locked (docs/deploy.md):
    # the default is the behaviour, and the IaC grants the LogStore's table only when it is on.
    "delta_multi_writer": "off by default; needs a LogStore jar the lock does not have yet",
    "delta_log_table": "read only with delta_multi_writer on",
    "contracts_dir": "the image's packaged contracts are the deployed ones (rebuild the image to change a rule)",
    "spark_java_options": "compose's long-lived JVMs release idle heap; a Fargate job's JVM exits after its one job",
    "spark_class_archive": "on by default; only used where an archive was built (`make jars`), which the image does not do yet",
}
# Set by the Spark image itself (spark/Dockerfile ENV), so identical under compose and ECS.
FROM_SPARK_IMAGE: tuple[str, ...] = ("spark_master", "jars_dir")


def env_name(field: str) -> str:
    return f"CARTFLOW_{field.upper()}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment(fields: tuple[str, ...], values: Mapping[str, Any]) -> dict[str, str]:
    """``{CARTFLOW_NAME: value}`` for ``fields``; ``values`` maps every field to its value."""
    missing = [f for f in fields if f not in values]
    if missing:
        raise KeyError(f"no value for setting(s): {', '.join(missing)}")
    return {env_name(f): _text(values[f]) for f in fields}
