"""cartflow.core.aws.session: against an emulator, a credential chain that fails (MiniStack's ECS
tasks get a container-credentials URI botocore refuses to call) falls back to the emulator's
dummy key; against AWS the same failure stays an error."""

from __future__ import annotations

import pytest

from cartflow.core.aws import session
from cartflow.core.config import Settings

# What MiniStack sets in an ECS task container (ecs.py _register_metadata).
MINISTACK_TASK_ENV = {
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://host.docker.internal:4566/v2/credentials/0f1e",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "token",
}


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    for name, value in MINISTACK_TASK_ENV.items():
        monkeypatch.setenv(name, value)


def test_botocore_refuses_the_emulators_task_credentials_uri(task_env: None) -> None:
    import boto3

    with pytest.raises(ValueError, match=r"Unsupported host 'host\.docker\.internal'"):
        boto3.session.Session().get_credentials()


def test_an_emulator_endpoint_gets_the_dummy_key(task_env: None) -> None:
    creds = session(Settings(aws_endpoint_url="http://host.docker.internal:4566")).get_credentials()
    assert creds is not None
    assert (creds.access_key, creds.secret_key) == ("test", "test")


def test_real_aws_keeps_the_error(task_env: None) -> None:
    with pytest.raises(ValueError, match="Unsupported host"):
        session(Settings(aws_endpoint_url=None)).get_credentials()


def test_working_credentials_are_used_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-chain")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    creds = session(Settings(aws_endpoint_url="http://127.0.0.1:4566")).get_credentials()
    assert creds is not None and creds.access_key == "from-the-chain"
