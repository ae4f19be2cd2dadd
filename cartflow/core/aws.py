"""boto3 clients built from Settings: the only place that knows about the emulator endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from cartflow.core.config import Settings

_BOTO_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=70)
# Long polls: the polling loop retries with its own backoff and checks for a stop between
# polls; botocore's retries (up to ~15 s of backoff on a refused connection) would hold a stop up.
_POLL_CONFIG = _BOTO_CONFIG.merge(Config(retries={"max_attempts": 1, "mode": "standard"}))


def session(settings: Settings) -> boto3.session.Session:
    """A boto3 session with credentials from the usual chain; against an emulator, the
    emulator's dummy key when the chain has none.

    Real AWS (no endpoint) never falls back: there a missing credential stays an error. An
    emulator can also hand out a credential source botocore refuses to read: MiniStack's ECS
    tasks get ``AWS_CONTAINER_CREDENTIALS_FULL_URI=http://host.docker.internal:...`` and
    botocore only fetches container credentials from loopback or 169.254.170.2/.23
    (ValueError "Unsupported host"); the emulator accepts any key, so the dummy one is used.
    """
    found = boto3.session.Session(region_name=settings.region)
    if not settings.aws_endpoint_url:
        return found
    try:
        if found.get_credentials() is not None:
            return found
    except ValueError:
        pass
    return boto3.session.Session(
        region_name=settings.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - the emulator's documented dummy key, never sent to AWS
    )


@dataclass
class AwsClients:
    """Lazily created, shareable boto3 clients for one Settings."""

    settings: Settings
    _session: boto3.session.Session = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._session = session(self.settings)

    def client(self, service: str, config: Config = _BOTO_CONFIG) -> Any:
        return self._session.client(service, endpoint_url=self.settings.aws_endpoint_url, config=config)

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def streams(self) -> Any:
        return self.client("dynamodbstreams")

    @cached_property
    def sqs(self) -> Any:
        return self.client("sqs")

    @cached_property
    def sns(self) -> Any:
        return self.client("sns")

    @cached_property
    def sfn(self) -> Any:
        return self.client("stepfunctions")

    @cached_property
    def sfn_poller(self) -> Any:
        """Step Functions for GetActivityTask long polls only: no botocore retries (see _POLL_CONFIG)."""
        return self.client("stepfunctions", _POLL_CONFIG)

    @cached_property
    def ddb_resource(self) -> Any:
        return self._session.resource("dynamodb", endpoint_url=self.settings.aws_endpoint_url, config=_BOTO_CONFIG)
