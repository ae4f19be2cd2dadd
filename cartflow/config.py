"""The one configuration object. Nothing else in cartflow reads ``os.environ``.

Every process (functions, runners, spark-runner, CLI, jobs) builds ``Settings()`` from
its environment; prefix ``CARTFLOW_``. AWS credentials are *not* here: boto3 reads them
from its usual chain (env, profile, task role), so no secret is ever part of settings.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# S3 bucket names and DynamoDB/SNS/SQS/SFN names we accept (a subset of what AWS allows,
# so a name that passes here is valid for every service it is used with).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,80}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARTFLOW_", env_file=None, extra="ignore")

    # --- where AWS is -------------------------------------------------------------
    aws_endpoint_url: str | None = Field(
        default=None, description="Emulator endpoint (e.g. http://127.0.0.1:4566); None = real AWS"
    )
    region: str = "us-east-1"
    account_id: str = "000000000000"

    # --- resource names (the resource spec is rendered with these) ---------------
    bucket: str = "cartflow-data"
    events_table: str = "cartflow-events"
    batch_chunks_table: str = "cartflow-batch-chunks"
    idempotency_table: str = "cartflow-idempotency"
    category_kpis_table: str = "CategoryKPIs"
    order_kpis_table: str = "OrderKPIs"
    ingest_queue: str = "cartflow-ingest"
    failure_topic: str = "cartflow-failure"
    success_topic: str = "cartflow-success"
    state_machine: str = "cartflow-batch"
    validate_activity: str = "cartflow-validate"
    transform_activity: str = "cartflow-transform"

    # --- pipeline behaviour ------------------------------------------------------
    debounce_seconds: int = Field(default=60, ge=0, le=86_400)
    max_files_per_chunk: int = Field(default=50, ge=1, le=99)  # TransactWriteItems caps at 100
    event_retention_days: int = Field(default=14, ge=1)  # TTL on events once batched/rejected
    debouncer_interval_seconds: float = Field(default=5.0, gt=0)
    controller_interval_seconds: float = Field(default=5.0, gt=0)
    max_execution_seconds: int = Field(default=3600, ge=30)  # controller stops runaway executions

    # Retry of a failed Spark job step in the state machine (AWS target uses 30 s / 3 / 2).
    job_retry_interval_seconds: int = Field(default=2, ge=1)
    job_retry_max_attempts: int = Field(default=2, ge=0)
    job_retry_backoff_rate: float = Field(default=1.5, ge=1.0)

    # --- Spark ---------------------------------------------------------------------
    spark_master: str = "local[*]"
    spark_driver_memory: str = "1g"
    spark_shuffle_partitions: int = Field(default=4, ge=1)
    jars_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "cartflow" / "jars")
    # Local runners keep stream checkpoints and liveness files here.
    state_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "cartflow" / "state")
    # AWS ECS rendering of the state machine
    ecs_cluster: str = "cartflow"
    ecs_task_definition: str = "cartflow-spark-job"
    ecs_container_name: str = "spark-job"
    ecs_subnets: list[str] = Field(default_factory=list)
    ecs_security_groups: list[str] = Field(default_factory=list)
    step_functions_role_arn: str | None = None

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, v: str) -> str:
        if not _BUCKET_RE.match(v) or ".." in v:
            raise ValueError(f"invalid S3 bucket name: {v!r}")
        return v

    @field_validator(
        "events_table",
        "batch_chunks_table",
        "idempotency_table",
        "category_kpis_table",
        "order_kpis_table",
        "ingest_queue",
        "failure_topic",
        "success_topic",
        "state_machine",
        "validate_activity",
        "transform_activity",
    )
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"invalid resource name {v!r}: use 3-80 of [A-Za-z0-9_.-]")
        return v

    # --- derived ARNs/URLs (one place that knows ARN shapes) ------------------------
    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    @property
    def failure_topic_arn(self) -> str:
        return self.arn("sns", self.failure_topic)

    @property
    def success_topic_arn(self) -> str:
        return self.arn("sns", self.success_topic)

    @property
    def state_machine_arn(self) -> str:
        return self.arn("states", f"stateMachine:{self.state_machine}")

    def activity_arn(self, name: str) -> str:
        return self.arn("states", f"activity:{name}")

    @property
    def ingest_queue_arn(self) -> str:
        return self.arn("sqs", self.ingest_queue)

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached; tests build ``Settings(...)`` directly instead)."""
    return Settings()
