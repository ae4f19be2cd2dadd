"""The one configuration object. Nothing else in cartflow reads ``os.environ``.

Every process (functions, runners, spark-runner, CLI, jobs) builds ``Settings()`` from
its environment; prefix ``CARTFLOW_``. AWS credentials are *not* here: boto3 reads them
from its usual chain (env, profile, task role), so no secret is ever part of settings.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cartflow.core.spec import defaults as _spec_defaults

_SPEC = _spec_defaults()

# S3 bucket names and DynamoDB/SNS/SQS/SFN names we accept (a subset of what AWS allows,
# so a name that passes here is valid for every service it is used with).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,80}$")

# The endpoint comes from CARTFLOW_AWS_ENDPOINT_URL, else botocore's standard AWS_ENDPOINT_URL.
ENDPOINT_VARIABLES = ("CARTFLOW_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL")
ENDPOINT_EXAMPLE = "http://127.0.0.1:4566"


# The settings that name an AWS resource (besides the bucket): validated alike, renamed alike.
RESOURCE_NAME_FIELDS = (
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
    "delta_log_table",
    "job_results_table",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARTFLOW_", env_file=None, extra="ignore", populate_by_name=True)

    # --- where AWS is -------------------------------------------------------------
    aws_endpoint_url: str | None = Field(
        default=None,
        description="Emulator endpoint (e.g. http://127.0.0.1:4566); None = real AWS",
        validation_alias=AliasChoices(*ENDPOINT_VARIABLES),  # the first one set wins
    )
    region: str = _SPEC["region"]
    account_id: str = _SPEC["account_id"]

    # --- resource names: defaults live in the resource spec (cartflow/core/spec.yaml)
    bucket: str = _SPEC["bucket"]
    events_table: str = _SPEC["events_table"]
    batch_chunks_table: str = _SPEC["batch_chunks_table"]
    idempotency_table: str = _SPEC["idempotency_table"]
    category_kpis_table: str = _SPEC["category_kpis_table"]
    order_kpis_table: str = _SPEC["order_kpis_table"]
    ingest_queue: str = _SPEC["ingest_queue"]
    failure_topic: str = _SPEC["failure_topic"]
    success_topic: str = _SPEC["success_topic"]
    state_machine: str = _SPEC["state_machine"]
    validate_activity: str = _SPEC["validate_activity"]
    transform_activity: str = _SPEC["transform_activity"]
    delta_log_table: str = _SPEC["delta_log_table"]
    job_results_table: str = _SPEC["job_results_table"]
    state_machine_target: Literal["local", "aws"] = _SPEC["state_machine_target"]

    # --- the embedded emulator (MiniStack in its own virtualenv: it pins botocore) ---
    ministack_version: str = "1.5.33"
    emulator_venv: Path = Field(default_factory=lambda: Path.home() / ".cache" / "cartflow" / "ministack-venv")
    emulator_port: int = Field(default=4566, ge=1024, le=65535)
    # Keep the emulator's state (tables, queues, executions' definitions) and S3 objects across
    # restarts (`cartflow up --persist`); off, every start begins empty.
    emulator_persist: bool = False
    # Where the dataset contracts are read from at each validation (None: the packaged ones,
    # spark/jobs/contracts/). Change a rule there, then `cartflow backfill` re-runs uploads under it.
    contracts_dir: Path | None = None
    # The spark-runner runs a generated batch under spark-runner-warmup/ at start, so the first
    # real batch runs warm (docs/benchmarks.md): a first 5,000-row batch as fast as a warm one
    # (1.6-1.8x slower without), but ~28 s more to start and ~570 MB more idle memory. Off by default.
    spark_warmup: bool = False
    # Local-mode sessions map the driver's class archive when one matches the JVM and the jars
    # (spark/jobs/class_archive.py; `make jars` builds it): a faster JVM start and first batch.
    spark_class_archive: bool = True

    # --- pipeline behaviour ------------------------------------------------------
    debounce_seconds: int = Field(default=60, ge=0, le=86_400)
    max_files_per_chunk: int = Field(default=50, ge=1, le=99)  # TransactWriteItems caps at 100
    event_retention_days: int = Field(default=14, ge=1)  # TTL on events once batched/rejected
    debouncer_interval_seconds: float = Field(default=5.0, gt=0)
    controller_interval_seconds: float = Field(default=5.0, gt=0)
    max_execution_seconds: int = Field(default=3600, ge=30)  # controller stops runaway executions
    # A job task silent this long (no worker heartbeat) is lost: Step Functions enforces it on
    # AWS (HeartbeatSeconds); locally the controller's watchdog stops the execution and
    # re-queues the batch, at most max_auto_reruns times, then marks it failed and alerts.
    job_heartbeat_seconds: int = Field(default=120, ge=10)
    max_auto_reruns: int = Field(default=2, ge=0)
    # A batch whose quarantined share of rows is above this fails (and alerts) without writing.
    max_quarantined_share: float = Field(default=0.5, ge=0.0, le=1.0)

    # Retry of a failed Spark job step in the state machine (AWS target uses 30 s / 3 / 2).
    job_retry_interval_seconds: int = Field(default=_SPEC["job_retry_interval_seconds"], ge=1)
    job_retry_max_attempts: int = Field(default=_SPEC["job_retry_max_attempts"], ge=0)
    job_retry_backoff_rate: float = Field(default=_SPEC["job_retry_backoff_rate"], ge=1.0)

    # --- Spark ---------------------------------------------------------------------
    spark_master: str = "local[*]"
    spark_driver_memory: str = "1g"
    # More JVM options for the driver and the executors (compose sets the idle-heap release of
    # spark/jobs/session.py there: long-lived JVMs that wait for uploads). Flags only.
    spark_java_options: str = Field(default="", pattern=r"^(-[\w.:=+/,-]+( +|$))*$")
    # A ceiling: each job fits its shuffle partitions to its input (session.fit_shuffle_partitions).
    spark_shuffle_partitions: int = Field(default=4, ge=1)
    # Off for per-batch sized inputs (see spark/jobs/session.py); turn on for large backfills.
    spark_adaptive_execution: bool = False
    # Client mode against a cluster (compose): executors connect back to the driver.
    spark_driver_host: str | None = None
    spark_driver_bind_address: str | None = None
    spark_driver_port: int | None = Field(default=None, ge=1024, le=65535)
    spark_block_manager_port: int | None = Field(default=None, ge=1024, le=65535)
    jars_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "cartflow" / "jars")
    # Local runners keep stream checkpoints and liveness files here.
    state_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "cartflow" / "state")
    # AWS ECS rendering of the state machine
    ecs_cluster: str = "cartflow"
    ecs_task_definition: str = "cartflow-spark-job"
    ecs_container_name: str = "spark-job"
    # From the environment: a JSON list or a comma-separated one (subnet-a,subnet-b).
    ecs_subnets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ecs_security_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    step_functions_role_arn: str | None = None
    # --- the distributed engine (cartflow/infra/distributed.py, docs/deploy.md) ----------
    # Batches with more raw input bytes than this run on it, the rest on one Fargate task.
    distributed_min_input_bytes: int = Field(default=_SPEC["distributed_min_input_bytes"], ge=0)
    # The existing EKS cluster that is the engine on AWS; None: every batch runs on Fargate.
    eks_cluster: str | None = None
    eks_namespace: str = "cartflow"
    eks_service_account: str = "cartflow-spark"
    # Delta's DynamoDB-backed S3 LogStore (table delta_log_table): commits stay atomic with
    # several writers per table. Off: one batch in flight keeps every table single-writer.
    delta_multi_writer: bool = False

    @field_validator("aws_endpoint_url", mode="before")
    @classmethod
    def _valid_endpoint(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            return None  # an empty variable means "not set"
        if not isinstance(v, str):
            return v
        url = urlsplit(v.strip())
        try:
            port_ok = url.port is None or url.port > 0
        except ValueError:
            port_ok = False
        if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
            raise ValueError(f"not an endpoint URL: {v!r}; expected scheme://host:port, e.g. {ENDPOINT_EXAMPLE}")
        return v.strip()

    @field_validator("ecs_subnets", "ecs_security_groups", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        text = v.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"not a JSON list: {v!r}; or give a comma-separated list (a,b)") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, v: str) -> str:
        if not _BUCKET_RE.match(v) or ".." in v:
            raise ValueError(f"invalid S3 bucket name: {v!r}")
        return v

    @field_validator(*RESOURCE_NAME_FIELDS)
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

    def spec_values(self) -> dict[str, Any]:
        """The values the resource spec is rendered with (its `defaults` keys)."""
        return {name: getattr(self, name) for name in _SPEC}

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached; tests build ``Settings(...)`` directly instead)."""
    return Settings()
