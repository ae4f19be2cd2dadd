"""Shared fixtures. Integration tests run against a real MiniStack process and real Spark.

Under CI=true nothing is skipped: a suite whose prerequisites are missing fails loudly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartflow.core.config import Settings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
IN_CI = os.environ.get("CI", "").lower() == "true"

# The longest modules (by the CI durations), longest first: `make test` hands whole modules
# to two workers in collection order, so a long module collected last would leave one
# worker idle until it ends. Every other module keeps its place after these.
LONGEST_FIRST = (
    "tests/e2e/test_stack_in_emulator.py",
    "tests/e2e/test_spark_image_job.py",
    "tests/e2e/test_compose_stack.py",
    "tests/integration/test_chaos.py",
    "tests/integration/test_uploads_torture.py",
    "tests/integration/test_dashboard.py",
    "tests/integration/test_pipeline.py",
    "tests/integration/test_jobs_local.py",
    "tests/integration/test_bench_smoke.py",
    "tests/integration/test_corpus_job.py",
    "tests/integration/test_persist_restart.py",
    "tests/integration/test_replay.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(pair: tuple[int, pytest.Item]) -> tuple[int, int]:
        index, item = pair
        module = item.path.relative_to(REPO).as_posix() if item.path.is_relative_to(REPO) else ""
        return rank.get(module, len(rank)), index

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]


# The emulator accepts any credentials; real ones must never be used by tests.
os.environ["AWS_ACCESS_KEY_ID"] = "test"
os.environ["AWS_SECRET_ACCESS_KEY"] = "test"
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI: a suite that cannot run must say so loudly there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("state")
    return Settings(state_dir=state)


@pytest.fixture(scope="module")
def emulator(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh MiniStack process per test module (starts in about a second)."""
    from cartflow.local.emulator import free_port, start_emulator

    emu = start_emulator(base_settings, port=free_port(), log_dir=tmp_path_factory.mktemp("emulator"))
    try:
        yield emu.endpoint
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def settings(base_settings: Settings, emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return base_settings.model_copy(
        update={
            "aws_endpoint_url": emulator,
            "state_dir": tmp_path_factory.mktemp("state"),
            "debounce_seconds": 1,
            "debouncer_interval_seconds": 0.5,
            "controller_interval_seconds": 1.0,
            "job_retry_interval_seconds": 1,
        }
    )


@pytest.fixture(scope="module")
def stack_resources(settings: Settings) -> dict[str, str]:
    from cartflow.core.aws import AwsClients
    from cartflow.infra import apply_resources

    return apply_resources(settings, AwsClients(settings))


@pytest.fixture(scope="module")
def deps(settings: Settings, stack_resources: dict[str, str]):  # type: ignore[no-untyped-def]
    from cartflow.core.deps import Deps, use_deps

    d = Deps.from_settings(settings)
    use_deps(d)  # handlers invoked in-process use this emulator
    yield d
    use_deps(None)


def subscribe_queue(deps, topic_arn: str, name: str) -> str:  # type: ignore[no-untyped-def]
    """An SQS queue subscribed to an SNS topic (how tests receive notices)."""
    sqs = deps.clients.sqs
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    deps.clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return url
