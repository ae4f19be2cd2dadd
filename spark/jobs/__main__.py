"""``python -m spark.jobs {validate|transform} (--batch JSON | --batch-file PATH)``

The last stdout line is the result JSON; the same document is put in the job results table
(spec table ``job_results_table``, key batch_id + job), where the AWS state machine reads it
after ``ecs:runTask.sync``. Exit codes: 0 = the job ran and its result is stored (a *failed*
validation is a result, routed by the state machine's Choice, not a crash); 1 = the job
crashed, or its result could not be stored (retried by the state machine); 2 = bad
invocation or batch input (retrying cannot help).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from cartflow.core.config import Settings
from cartflow.core.exceptions import CartflowError
from cartflow.core.models import BatchInput

EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT = 0, 1, 2
# A result is read by the execution that ran the job (bounded by max_execution_seconds); a
# week leaves time to look at it afterwards. The S3 document under validation_output/ stays.
RESULT_TTL_SECONDS = 7 * 86_400

log = logging.getLogger("spark.jobs")


class BadInput(CartflowError):
    """The invocation cannot succeed as given; the message says why."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spark.jobs", description=__doc__)
    parser.add_argument("job", choices=["validate", "transform"])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--batch", help="the BatchInput JSON (the Step Functions execution input)")
    source.add_argument("--batch-file", type=Path, help="a file holding the BatchInput JSON")
    parser.add_argument("--warehouse", help="base URI of the Delta tables (default s3a://<batch.bucket>)")
    return parser.parse_args(argv)


def load_batch(args: argparse.Namespace) -> BatchInput:
    if args.batch_file is not None:
        try:
            text = args.batch_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot read --batch-file {args.batch_file}: {exc}") from exc
    else:
        text = args.batch
    try:
        return BatchInput.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise BadInput(f"batch input is not JSON: {exc}") from exc
    except ValidationError as exc:
        raise BadInput(f"batch input is not a valid BatchInput: {exc}") from exc


def run(job: str, batch: BatchInput, settings: Settings, warehouse: str | None) -> str:
    # Lazy imports: argument errors are reported without starting a JVM.
    from spark.jobs.session import build_spark

    spark = build_spark(settings, app_name=f"cartflow-{job}-{batch.batch_id}")
    try:
        if job == "validate":
            from spark.jobs.validation import run_validation

            return run_validation(spark, settings, batch, warehouse).model_dump_json()
        from spark.jobs.transform import run_transform

        return run_transform(spark, settings, batch, warehouse).model_dump_json()
    finally:
        spark.stop()


def publish_result(settings: Settings, job: str, batch_id: str, result_json: str, now: float | None = None) -> None:
    """Put the result where the AWS state machine's ReadResult state gets it (dynamodb:getItem)."""
    from cartflow.core.aws import AwsClients

    expires = int((time.time() if now is None else now) + RESULT_TTL_SECONDS)
    AwsClients(settings).dynamodb.put_item(
        TableName=settings.job_results_table,
        Item={"batch_id": {"S": batch_id}, "job": {"S": job}, "document": {"S": result_json}, "expires_at": {"N": str(expires)}},
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # py4j logs the gateway's close at interpreter exit, after the result line; under
    # spark-submit (spark.jobs.submit) the application's stderr is merged into its stdout.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_OK if exc.code == 0 else EXIT_BAD_INPUT
    try:
        batch = load_batch(args)
        settings = Settings()
    except (BadInput, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result_json = run(args.job, batch, settings, args.warehouse)
        publish_result(settings, args.job, batch.batch_id, result_json)
    except Exception:
        log.exception("%s job crashed for batch %s", args.job, batch.batch_id)
        return EXIT_CRASH
    sys.stdout.flush()
    print(result_json, flush=True)  # last stdout line: the result
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
