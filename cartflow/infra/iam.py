"""Least-privilege IAM policy documents for cartflow's six AWS principals.

``policies(values)`` reads the typed resource spec (``cartflow.core.spec.load``, spec.yaml
with ``values`` filled in) and returns one identity-policy document per principal::

    ingest          Lambda: SQS event source mapping on the ingest queue + events/idempotency tables
    debouncer       Lambda (scheduled): events `unbatched` index -> batch_chunks transaction
    stream-trigger  Lambda: batch_chunks stream -> dispatch (lock, claim, StartExecution)
    controller      Lambda (scheduled): dispatch + Describe/StopExecution of the state machine's runs
    state-machine   Step Functions role (`state_machine.role` in the spec)
    spark-job       ECS task role of the Spark job container (validate / transform)

Every ARN is built from a resource the spec declares (a table, one of its indexes or
its stream, the queue, a topic, a bucket prefix, the state machine); asking for one the spec
does not have raises ``KeyError`` so a spec change cannot silently widen or break a policy.
The only things not in the spec are the ECS cluster / task definition / role names of the AWS
target; they come from ``values`` (``ecs_*`` keys, defaults in ``ECS_DEFAULTS`` matching
cartflow.core.config.Settings).

Where AWS leaves no narrower choice the statement says so in a comment ("AWS-REQUIRED").
CloudWatch Logs permissions are *not* generated: function names / log groups are not part of
the spec, so the IaC that names the functions attaches those.

STDLIB + PyYAML only (like apply.py): ``python -m cartflow.infra.iam`` prints the documents
as JSON, with values from the spec's defaults overridden by CARTFLOW_* environment variables.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from cartflow.core.spec import Spec, Table, arn, load, values_from_env

PolicyDocument = dict[str, Any]
Statement = dict[str, Any]

VERSION = "2012-10-17"
PRINCIPALS: tuple[str, ...] = ("ingest", "debouncer", "stream-trigger", "controller", "state-machine", "spark-job")

# AWS target of the state machine (ecs:runTask.sync). Not in spec.yaml's defaults; the names
# match cartflow.core.config.Settings (ecs_cluster, ecs_task_definition). Role names are a
# convention of this module and can be overridden through values.
ECS_DEFAULTS: dict[str, str] = {
    "ecs_cluster": "cartflow",
    "ecs_task_definition": "cartflow-spark-job",
    "ecs_task_role": "{ecs_task_definition}-task",
    "ecs_execution_role": "{ecs_task_definition}-execution",
}
# The EventBridge rule Step Functions manages for every *.sync ECS integration (fixed name).
ECS_SYNC_RULE = "StepFunctionsGetEventsForECSTaskRule"

# Index names the services hard-code (services/debouncer.py, cartflow/core/batch_table.py,
# spark/jobs/transform.py); they must exist in the spec, which _Catalog checks.
UNBATCHED_INDEX = "unbatched"
STATUS_INDEX = "by_status"
CATEGORY_BY_DATE_INDEX = "by_order_date"


# --------------------------------------------------------------------------- catalogue


class _Catalog:
    """ARNs of the resources the spec declares (and nothing else)."""

    def __init__(self, values: Mapping[str, Any], spec: Spec) -> None:
        self.values = values
        self.tables: dict[str, Table] = {t.name: t for t in spec.tables}
        self.queues = {q.name for q in spec.queues}
        self.topics = {t.name for t in spec.topics}
        self.bucket = spec.bucket.name
        self.prefixes = set(spec.bucket.prefixes)
        self.state_machine_name = spec.state_machine.name

    @staticmethod
    def _need(kind: str, name: str, known: Iterable[str]) -> None:
        if name not in known:
            raise KeyError(f"{kind} {name!r} is not declared in the resource spec (known: {sorted(known)})")

    def table(self, name: str) -> str:
        self._need("table", name, self.tables)
        return arn(self.values, "dynamodb", f"table/{name}")

    def index(self, table: str, index: str) -> str:
        self._need("table", table, self.tables)
        self._need(f"index of {table}", index, [i.name for i in self.tables[table].indexes])
        return f"{self.table(table)}/index/{index}"

    def stream(self, table: str) -> str:
        self._need("table", table, self.tables)
        if not self.tables[table].stream:
            raise KeyError(f"table {table!r} has no stream in the resource spec")
        # The stream label (a creation timestamp) is only known once the table exists.
        return f"{self.table(table)}/stream/*"

    def queue(self, name: str) -> str:
        self._need("queue", name, self.queues)
        return arn(self.values, "sqs", name)

    def topic(self, name: str) -> str:
        self._need("topic", name, self.topics)
        return arn(self.values, "sns", name)

    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    def objects(self, prefix: str) -> str:
        """Every object under one of the spec's bucket prefixes (``raw/`` -> ``.../raw/*``)."""
        self._need("bucket prefix", prefix, self.prefixes)
        return f"arn:aws:s3:::{self.bucket}/{prefix}*"

    def state_machine(self) -> str:
        return arn(self.values, "states", f"stateMachine:{self.state_machine_name}")

    def executions(self) -> str:
        # Execution names are batch ids, chosen at start time.
        return arn(self.values, "states", f"execution:{self.state_machine_name}:*")


def _statement(
    sid: str,
    actions: list[str],
    resources: list[str],
    condition: Mapping[str, Any] | None = None,
    effect: str = "Allow",
) -> Statement:
    stmt: Statement = {"Sid": sid, "Effect": effect, "Action": sorted(actions), "Resource": resources}
    if condition:
        stmt["Condition"] = dict(condition)
    return stmt


def _document(statements: list[Statement]) -> PolicyDocument:
    return {"Version": VERSION, "Statement": statements}


# --------------------------------------------------------------------------- principals


def _ingest(c: _Catalog, v: Mapping[str, Any]) -> PolicyDocument:
    return _document(
        [
            # Lambda's SQS event source mapping polls with the function's role.
            _statement(
                "ConsumeIngestQueue",
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
                [c.queue(v["ingest_queue"])],
            ),
            _statement("RecordEvent", ["dynamodb:PutItem"], [c.table(v["events_table"])]),
            # aws_lambda_powertools idempotency (DynamoDBPersistenceLayer).
            _statement(
                "Idempotency",
                ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                [c.table(v["idempotency_table"])],
            ),
        ]
    )


def _debouncer(c: _Catalog, v: Mapping[str, Any]) -> PolicyDocument:
    # TransactWriteItems has no IAM action of its own: each Put/Update inside it is authorised
    # as dynamodb:PutItem / dynamodb:UpdateItem on its table (no ConditionCheck actions used).
    return _document(
        [
            _statement("FindUnbatchedEvents", ["dynamodb:Query"], [c.index(v["events_table"], UNBATCHED_INDEX)]),
            _statement("MarkEventsBatched", ["dynamodb:UpdateItem"], [c.table(v["events_table"])]),
            _statement("CreateChunk", ["dynamodb:PutItem"], [c.table(v["batch_chunks_table"])]),
            # An upload superseded by a later one of the same key: that version only.
            _statement("DropSupersededVersions", ["s3:DeleteObjectVersion"], [c.objects("raw/")]),
        ]
    )


def _dispatch_statements(c: _Catalog, v: Mapping[str, Any]) -> list[Statement]:
    """services/dispatch.py + batches.py: lock item, claim/unclaim, by_status, StartExecution."""
    chunks = v["batch_chunks_table"]
    return [
        _statement("BatchChunks", ["dynamodb:GetItem", "dynamodb:UpdateItem"], [c.table(chunks)]),
        _statement("ChunksByStatus", ["dynamodb:Query"], [c.index(chunks, STATUS_INDEX)]),
        _statement("StartBatch", ["states:StartExecution"], [c.state_machine()]),
    ]


def _stream_trigger(c: _Catalog, v: Mapping[str, Any]) -> PolicyDocument:
    chunks = v["batch_chunks_table"]
    return _document(
        [
            # Lambda's DynamoDB stream event source mapping reads with the function's role.
            _statement(
                "ReadChunkStream",
                ["dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:DescribeStream"],
                [c.stream(chunks)],
            ),
            # AWS-REQUIRED "*": dynamodb:ListStreams supports no resource-level permissions. It
            # only returns stream ARNs/table names (no item data).
            _statement("ListStreams", ["dynamodb:ListStreams"], ["*"]),
            *_dispatch_statements(c, v),
        ]
    )


def _controller(c: _Catalog, v: Mapping[str, Any]) -> PolicyDocument:
    return _document(
        [
            *_dispatch_statements(c, v),
            _statement("WatchExecutions", ["states:DescribeExecution", "states:StopExecution"], [c.executions()]),
            # An execution that ended outside the state machine's Catch, or that the watchdog
            # gave up on, is alerted by the controller itself.
            _statement("NotifyFailure", ["sns:Publish"], [c.topic(v["failure_topic"])]),
        ]
    )


def _ecs_names(v: Mapping[str, Any]) -> dict[str, str]:
    # Only the defaults are templates: a given name is used as is (it may be a deploy-time
    # ${...} value of the CloudFormation renderer).
    names = {k: str(v[k]) for k in ECS_DEFAULTS if k in v}
    for k, default in ECS_DEFAULTS.items():  # in order: the role defaults name the task definition
        names.setdefault(k, default.format_map(names))
    return names


def _state_machine(c: _Catalog, v: Mapping[str, Any]) -> PolicyDocument:
    bucket_objects = {p: c.objects(p) for p in ("raw/", "processed/", "rejected/", "validation_output/", "staging/")}
    statements = [
        # StageRawFiles (aws-sdk:s3:copyObject of one raw version -> staging/<batch_id>/; a
        # backfill stages an archived copy). The tagging actions are only exercised when an
        # upload carries tags (CopyObject copies the tag set by default).
        _statement(
            "ReadUploadVersions",
            ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
            [bucket_objects["raw/"], bucket_objects["processed/"], bucket_objects["rejected/"]],
        ),
        # ArchiveRawFiles: the staged copy -> processed/<batch_id>/, or rejected/<batch_id>/ for
        # files the validation rejected as a whole.
        _statement("ReadStaged", ["s3:GetObject", "s3:GetObjectTagging"], [bucket_objects["staging/"]]),
        _statement(
            "WriteStagedAndArchive",
            ["s3:PutObject", "s3:PutObjectTagging"],
            [bucket_objects["staging/"], bucket_objects["processed/"], bucket_objects["rejected/"]],
        ),
        # DeleteRawFiles (aws-sdk:s3:deleteObject), only once every copy exists: exactly the
        # version the batch read (DeleteObjectVersion), then its staged copy.
        _statement("DeleteArchivedRaw", ["s3:DeleteObject", "s3:DeleteObjectVersion"], [bucket_objects["raw/"]]),
        _statement("DeleteStaged", ["s3:DeleteObject"], [bucket_objects["staging/"]]),
        # MarkDone / MarkFailed / ReleaseLock*.
        _statement("UpdateChunk", ["dynamodb:UpdateItem"], [c.table(v["batch_chunks_table"])]),
        _statement("Notify", ["sns:Publish"], [c.topic(v["success_topic"]), c.topic(v["failure_topic"])]),
    ]
    if v.get("state_machine_target") == "aws":
        statements += _state_machine_ecs(c, v, bucket_objects["validation_output/"])
    # target "local": the job states are Activity tasks, which need no permission on the
    # state machine's role (the workers poll with their own credentials).
    return _document(statements)


def _state_machine_ecs(c: _Catalog, v: Mapping[str, Any], results: str) -> list[Statement]:
    e = _ecs_names(v)
    cluster_arn = arn(v, "ecs", f"cluster/{e['ecs_cluster']}")
    on_cluster = {"ArnEquals": {"ecs:cluster": cluster_arn}}
    return [
        # ${job.state}ReadResult of the Fargate job states: the result the job put in the job
        # results table (spark.jobs.__main__.publish_result).
        _statement("ReadJobResultItem", ["dynamodb:GetItem"], [c.table(v["job_results_table"])]),
        # ... and of the distributed (aws-eks) job states: the result document in S3.
        _statement("ReadJobResult", ["s3:GetObject"], [results]),
        # The state machine passes the family only (latest ACTIVE revision): any revision.
        _statement(
            "RunSparkJob",
            ["ecs:RunTask"],
            [arn(v, "ecs", f"task-definition/{e['ecs_task_definition']}:*")],
            on_cluster,
        ),
        # runTask.sync polls / stops the task it started. Scoped to task ARNs of the cluster
        # (long ARN format: task/<cluster>/<id>) plus the cluster condition; the common
        # Resource "*" is not needed.
        _statement(
            "TrackSparkJob",
            ["ecs:DescribeTasks", "ecs:StopTask"],
            [arn(v, "ecs", f"task/{e['ecs_cluster']}/*")],
            on_cluster,
        ),
        # PropagateTags=TASK_DEFINITION tags the new task: tag-on-create authorisation, only
        # as part of RunTask.
        _statement(
            "TagSparkJobOnRun",
            ["ecs:TagResource"],
            [arn(v, "ecs", f"task/{e['ecs_cluster']}/*")],
            {"StringEquals": {"ecs:CreateAction": "RunTask"}},
        ),
        _statement(
            "PassSparkJobRoles",
            ["iam:PassRole"],
            [
                f"arn:aws:iam::{v['account_id']}:role/{e['ecs_task_role']}",
                f"arn:aws:iam::{v['account_id']}:role/{e['ecs_execution_role']}",
            ],
            {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        ),
        # AWS-REQUIRED: runTask.sync waits through the EventBridge rule Step Functions manages
        # under this fixed name; exact rule ARN, no wildcard.
        _statement(
            "EcsSyncRule",
            ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            [arn(v, "events", f"rule/{ECS_SYNC_RULE}")],
        ),
    ]


# Prefixes the Spark job lists / reads / writes (S3A + Delta under s3a://<bucket>/).
SPARK_READ_ONLY_PREFIXES = ("raw/", "staging/")
SPARK_READ_WRITE_PREFIXES = ("validated/", "quarantine/", "file_registry/", "kpis/")


def _spark_job(c: _Catalog, v: Mapping[str, Any]) -> PolicyDocument:
    rw = [c.objects(p) for p in SPARK_READ_WRITE_PREFIXES]
    listable = [f"{p}*" for p in SPARK_READ_WRITE_PREFIXES + SPARK_READ_ONLY_PREFIXES]
    for p in SPARK_READ_WRITE_PREFIXES + SPARK_READ_ONLY_PREFIXES:
        c.objects(p)  # every listed prefix must be one the spec declares
    kpi_tables = [c.table(v["order_kpis_table"]), c.table(v["category_kpis_table"])]
    return _document(
        [
            # S3A directory probes and Delta log listing, only under the job's prefixes.
            _statement("ListJobPrefixes", ["s3:ListBucket"], [c.bucket_arn()], {"StringLike": {"s3:prefix": listable}}),
            # validation: the batch's staged copies of its uploads (file checks via boto3, data
            # via S3A), and raw/ for runs outside the state machine. Read only.
            _statement("ReadUploads", ["s3:GetObject"], [c.objects("raw/"), c.objects("staging/")]),
            # Delta tables: S3A writes, overwrites (replaceWhere) and deletes temporary/old files;
            # AbortMultipartUpload lets S3A clean up a failed large-file upload.
            _statement(
                "DeltaTables",
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                rw,
            ),
            # The job's result document, and its copy in the job results table that the AWS
            # state machine reads (a put per job and batch; never read back by the job).
            _statement("WriteJobResult", ["s3:PutObject"], [c.objects("validation_output/")]),
            _statement("PutJobResultItem", ["dynamodb:PutItem"], [c.table(v["job_results_table"])]),
            # transform.py DynamoKpiSink: boto3's batch_writer sends BatchWriteItem (puts, then
            # deletes of vanished rows); PutItem/DeleteItem cover single-item writes of the same
            # rows. Query only on the by_order_date index (the tables themselves are never queried).
            _statement("WriteKpis", ["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"], kpi_tables),
            _statement(
                "CategoriesByDate",
                ["dynamodb:Query"],
                [c.index(v["category_kpis_table"], CATEGORY_BY_DATE_INDEX)],
            ),
            *_delta_log_store(c, v),
            # Defence in depth: raw/ is the pipeline's input of record; only the state machine
            # removes it, after archiving. Holds even if a broader policy is attached later.
            _statement(
                "NeverModifyRaw",
                ["s3:DeleteObject", "s3:PutObject"],
                [c.objects("raw/")],
                effect="Deny",
            ),
        ]
    )


def _delta_log_store(c: _Catalog, v: Mapping[str, Any]) -> list[Statement]:
    """S3DynamoDBLogStore (settings.delta_multi_writer): a conditional PutItem per commit, reads
    of the latest entry, and the DescribeTable it runs at start (the spec creates the table,
    so no CreateTable)."""
    if not v.get("delta_multi_writer"):
        return []
    actions = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"]
    return [_statement("DeltaLogStore", actions, [c.table(v["delta_log_table"])])]


_BUILDERS = {
    "ingest": _ingest,
    "debouncer": _debouncer,
    "stream-trigger": _stream_trigger,
    "controller": _controller,
    "state-machine": _state_machine,
    "spark-job": _spark_job,
}


def policies(values: Mapping[str, Any], spec: Spec | Mapping[str, Any] | None = None) -> dict[str, PolicyDocument]:
    """One IAM identity-policy document per principal (keys: PRINCIPALS).

    ``spec``: the typed spec (its names rendered with ``values``), or spec.yaml's content to
    render with ``values`` (default: the file)."""
    catalog = _Catalog(values, spec if isinstance(spec, Spec) else load(values, spec))
    return {name: _BUILDERS[name](catalog, values) for name in PRINCIPALS}


def main(argv: list[str] | None = None) -> int:
    """``python -m cartflow.infra.iam [principal ...]``: print the policy documents as JSON."""
    args = sys.argv[1:] if argv is None else argv
    values: dict[str, Any] = values_from_env(os.environ)
    for key in ECS_DEFAULTS:  # the AWS target's names are not spec defaults
        raw = os.environ.get(f"CARTFLOW_{key.upper()}")
        if raw:
            values[key] = raw
    docs = policies(values)
    unknown = [a for a in args if a not in docs]
    if unknown:
        print(f"unknown principal(s): {', '.join(unknown)}; expected {', '.join(PRINCIPALS)}", file=sys.stderr)
        return 2
    print(json.dumps({k: docs[k] for k in args} if args else docs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
