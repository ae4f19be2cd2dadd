"""Every CLI command with bad input, run as a real subprocess: exit code, one-line message, no traceback.

Exit 2 = bad usage (the command or a setting must change), 1 = a failed operation. The
"fresh" rows point at a real emulator under resource names nothing created; "down" at a
free port nothing listens on; "aws" sets no endpoint at all (the refusals happen before any
request). The environment never carries real credentials or profiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from cartflow import __version__
from cartflow.core.models import FileOutcome, TableResult, ValidationResult
from tests.conftest import FIXTURES, REPO

pytestmark = pytest.mark.integration

# Resource names no test creates: a "fresh emulator" whatever ran before in this module.
FRESH = {
    "CARTFLOW_BUCKET": "cartflow-fresh-bucket",
    **{
        f"CARTFLOW_{name.upper()}": f"fresh-{name}"
        for name in (
            "events_table",
            "batch_chunks_table",
            "idempotency_table",
            "category_kpis_table",
            "order_kpis_table",
            "ingest_queue",
            "failure_topic",
            "success_topic",
        )
    },
}


@pytest.fixture(scope="module")
def down_endpoint() -> str:
    from cartflow.local.emulator import free_port

    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CARTFLOW_"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_EC2_METADATA_DISABLED": "true",
            # no profile, config or credentials file of this machine is ever read
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "CARTFLOW_STATE_DIR": str(home / "state"),
        }
    )
    return env


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cartflow", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    target: str  # none | aws | bad | down | fresh: where CARTFLOW_AWS_ENDPOINT_URL points
    code: int
    says: str  # a substring of the one error line ({endpoint} = the endpoint used)
    env: dict[str, str] = field(default_factory=dict)


ROWS: dict[str, Row] = {
    # help text is never read as markup; flags are what they say
    "images push --help": Row(("images", "push", "--help"), "none", 0, "HOST/PREFIX"),
    "images build --help": Row(("images", "build", "--help"), "none", 0, "--no-cache "),
    "version": Row(("--version",), "none", 0, f"cartflow {__version__}"),
    # render-state-machine
    "aws target without subnets": Row(("render-state-machine", "--target", "aws"), "none", 2, "--subnet subnet-0abc"),
    "unknown target": Row(("render-state-machine", "--target", "gcp"), "none", 2, "'gcp' is not one of 'local', 'aws'"),
    "subnets not a list": Row(
        ("render-state-machine", "--target", "aws"),
        "none",
        2,
        "CARTFLOW_ECS_SUBNETS: not a JSON list",
        {"CARTFLOW_ECS_SUBNETS": "[subnet-1"},
    ),
    # seed
    "seed missing folder": Row(("seed", "no-such-folder"), "down", 2, "no-such-folder: no such folder"),
    "seed a file": Row(("seed", "README.md"), "down", 2, "README.md: not a folder"),
    "seed the parent of seed folders": Row(("seed", "fixtures"), "down", 2, "did you mean one of its folders: fixtures/broken"),
    "seed no stack running": Row(("seed", "fixtures/valid"), "down", 1, "cannot reach the AWS endpoint {endpoint}"),
    "seed fresh emulator": Row(
        ("seed",), "fresh", 1, "bucket cartflow-fresh-bucket not found at {endpoint}: run `cartflow resources apply`"
    ),
    "seed real AWS without --yes": Row(("seed", "fixtures/valid"), "aws", 2, "pass --yes"),
    "resources apply real AWS without --yes": Row(
        ("resources", "apply"), "aws", 2, "set CARTFLOW_AWS_ENDPOINT_URL=http://127.0.0.1:4566 for the emulator, or pass --yes"
    ),
    # endpoint and settings
    "endpoint without scheme": Row(
        ("status",),
        "bad",
        2,
        "CARTFLOW_AWS_ENDPOINT_URL: not an endpoint URL: 'localhost:4566'; expected scheme://host:port, "
        "e.g. http://127.0.0.1:4566",
    ),
    "standard AWS_ENDPOINT_URL without scheme": Row(
        ("files",), "none", 2, "AWS_ENDPOINT_URL: not an endpoint URL: 'localhost:1'", {"AWS_ENDPOINT_URL": "localhost:1"}
    ),
    "bad bucket setting": Row(("kpis",), "down", 2, "CARTFLOW_BUCKET: invalid S3 bucket name", {"CARTFLOW_BUCKET": "Bad_B"}),
    "status no stack running": Row(("status",), "down", 1, "cannot reach the AWS endpoint {endpoint}"),
    "status fresh emulator": Row(("status",), "fresh", 1, "table fresh-batch_chunks_table not found at {endpoint}"),
    "files fresh emulator": Row(("files", "--json"), "fresh", 1, "not found at {endpoint}: run `cartflow resources apply`"),
    "kpis fresh emulator": Row(
        ("kpis",), "fresh", 1, "table fresh-order_kpis_table, table fresh-category_kpis_table not found at"
    ),
    "audit fresh emulator": Row(("audit",), "fresh", 1, "not found at {endpoint}: run `cartflow resources apply`"),
    "batches list fresh emulator": Row(("batches", "list"), "fresh", 1, "table fresh-batch_chunks_table not found"),
    "batches show bad id": Row(("batches", "show", "no/such"), "fresh", 2, "not a batch id: 'no/such'"),
    "batches list unknown status": Row(("batches", "list", "--status", "lost"), "fresh", 2, "'lost' is not one of"),
    "status real AWS unreachable": Row(
        ("status",),
        "aws",
        1,
        "real AWS (neither CARTFLOW_AWS_ENDPOINT_URL nor AWS_ENDPOINT_URL is set)",
        {"AWS_ENDPOINT_URL_STS": "{down}"},  # botocore's per-service endpoint: STS answers nowhere, fast
    ),
    # enumerated values
    "generate unknown shape": Row(("generate", "--shape", "foo"), "none", 2, "'foo' is not one of 'tables', 'order_lines'"),
    "generate zero rows": Row(("generate", "--rows", "0"), "none", 2, "Invalid value for '--rows'"),
    "generate into a file": Row(("generate", "--out", "README.md"), "none", 2, "'README.md' is a file"),
    "serve unknown component": Row(("serve", "nosuch"), "down", 2, "'nosuch' is not one of 'ingest', 'stream-trigger'"),
    "healthcheck unknown component": Row(("healthcheck", "nosuch"), "down", 2, "'nosuch' is not one of 'ingest'"),
    "iam unknown principal": Row(("resources", "iam", "nosuch"), "none", 2, "'nosuch' is not one of 'ingest', 'debouncer'"),
    "images unknown name": Row(("images", "build", "--only", "web"), "none", 2, "'web' is not one of 'services', 'spark'"),
    # contracts check
    "contracts missing file": Row(("contracts", "check", "nope.csv"), "none", 2, "nope.csv: no such file"),
    "contracts a folder": Row(("contracts", "check", "fixtures"), "none", 2, "fixtures: a folder, not a CSV file"),
    "contracts unknown dataset": Row(
        ("contracts", "check", "--dataset", "users", "README.md"), "none", 2, "'users' is not one of 'orders'"
    ),
    "deploy without a stack": Row(("deploy", "--region", "eu-west-1"), "none", 2, "Missing option '--stack'"),
}


def _row_env(row: Row, base_env: dict[str, str], emulator: str, down: str) -> tuple[str | None, dict[str, str]]:
    endpoint = {"none": None, "aws": None, "bad": "localhost:4566", "down": down, "fresh": emulator}[row.target]
    env = dict(base_env)
    if endpoint:
        env["CARTFLOW_AWS_ENDPOINT_URL"] = endpoint
    if row.target == "fresh":
        env.update(FRESH)
    env.update({k: v.format(down=down) for k, v in row.env.items()})
    return endpoint, env


@pytest.fixture(scope="module")
def outcomes(
    base_env: dict[str, str], emulator: str, down_endpoint: str
) -> dict[str, tuple[str | None, float, subprocess.CompletedProcess[str]]]:
    """Every row's command, run a few at a time (each is a fresh interpreter; most of it is waiting)."""

    def one(name: str) -> tuple[str | None, float, subprocess.CompletedProcess[str]]:
        endpoint, env = _row_env(ROWS[name], base_env, emulator, down_endpoint)
        started = time.monotonic()
        res = run(env, *ROWS[name].args)
        return endpoint, time.monotonic() - started, res

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ROWS, pool.map(one, ROWS), strict=True))


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_one_line_and_an_exit_code(name: str, outcomes) -> None:  # type: ignore[no-untyped-def]
    row = ROWS[name]
    endpoint, took, res = outcomes[name]
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    assert res.returncode == row.code, out
    expected = row.says.format(endpoint=endpoint)
    lines = [line for line in out.splitlines() if expected in line]
    assert lines, f"expected {expected!r} on one line of:\n{out}"
    if row.code != 0:
        errors = [line for line in out.splitlines() if line.lower().startswith("error:")]
        assert len(errors) == 1, out  # one error line, not a cascade
    assert took < 30, f"{name} took {took:.1f}s"
    if name == "images build --help":
        assert "--no-no-cache" not in out


# ------------------------------------------------------------------------ --json and the target line


def _json(res: subprocess.CompletedProcess[str]) -> object:
    assert "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)  # one document, nothing else on stdout


def test_json_output_and_target_line_on_the_emulator(deps, base_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    from services.debouncer import close_quiet_groups
    from tests.integration.test_functions import drain_ingest

    env = {**base_env, "CARTFLOW_AWS_ENDPOINT_URL": deps.settings.aws_endpoint_url}
    res = run(env, "seed", str(FIXTURES / "valid"))
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("target: emulator " + deps.settings.aws_endpoint_url) == 1
    assert f"6 file(s) from {FIXTURES / 'valid'} uploaded to s3://{deps.settings.bucket}/raw/" in res.stdout
    assert "order_items 2, order_lines 1, orders 2, products 1" in res.stdout

    drain_ingest(deps, 6)
    files = _json(run(env, "files", "--json"))
    assert isinstance(files, list) and len(files) == 6
    assert {f["state"] for f in files} == {"waiting (debounce)"}
    assert {f["s3_path"].split("/")[4] for f in files} == {"orders", "order_items", "order_lines", "products"}

    time.sleep(deps.settings.debounce_seconds + 0.2)
    created = close_quiet_groups(deps)
    status = _json(run(env, "status", "--json"))
    assert isinstance(status, dict)
    assert sorted(b["batch_id"] for b in status["batches"]) == sorted(created)
    assert {b["status"] for b in status["batches"]} == {"pending"}
    assert sum(len(b["file_paths"]) for b in status["batches"]) == 6

    res = run(env, "audit", "--json")
    audit = _json(res)
    assert isinstance(audit, dict) and set(audit) == {"files", "totals", "findings", "ok"}
    assert audit["totals"] == {"processed": 0, "rejected": 0, "superseded": 0, "deleted": 0, "failed": 0, "in progress": 6}
    assert res.returncode == (0 if audit["ok"] else 1)

    deps.clients.dynamodb.put_item(
        TableName=deps.settings.order_kpis_table,
        Item={"order_date": {"S": "2030-01-02"}, "total_orders": {"N": "3"}, "total_revenue": {"N": "12.5"}},
    )
    kpis = _json(run(env, "kpis", "--json"))
    assert isinstance(kpis, dict) and kpis["category_kpis"] == []
    assert {"order_date": "2030-01-02", "total_orders": 3, "total_revenue": 12.5} in kpis["order_kpis"]

    result = ValidationResult(
        batch_id="b-json-1",
        processing_date="2030-01-02",
        status="passed",
        shape="order_lines",
        processing_dates=["2030-01-02"],
        quarantined_share=0.0,
        max_quarantined_share=0.5,
        tables={"order_lines": TableResult(contract_version=1, files=1, input_rows=2, valid_rows=2)},
        files=[
            FileOutcome(
                uri=f"s3://{deps.settings.bucket}/raw/order_lines/a.csv", dataset="order_lines", status="accepted", rows=2,
                valid_rows=2, quarantined_rows=0,
            )
        ],
    )  # fmt: skip
    deps.clients.s3.put_object(
        Bucket=deps.settings.bucket, Key="validation_output/b-json-1.json", Body=result.model_dump_json().encode()
    )
    shown = _json(run(env, "batches", "show", "b-json-1", "--json"))
    assert ValidationResult.model_validate(shown) == result
    res = run(env, "batches", "show", "b-nope", "--json")
    assert res.returncode == 1 and res.stdout == "" and "no validation result for batch b-nope" in res.stderr


def test_target_names_the_aws_account_when_no_endpoint_is_set(deps, base_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """No endpoint: the CLI asks STS who it is talking to. botocore's per-service endpoint
    variables send STS and DynamoDB to the emulator, so this needs no real account."""
    endpoint = deps.settings.aws_endpoint_url
    env = {**base_env, "AWS_ENDPOINT_URL_STS": endpoint, "AWS_ENDPOINT_URL_DYNAMODB": endpoint}
    res = run(env, "status", "--json")
    assert res.returncode == 0, res.stderr
    account = deps.clients.client("sts").get_caller_identity()["Account"]
    assert f"target: AWS account {account}, region {deps.settings.region}" in res.stderr
    assert isinstance(_json(res), dict)
