"""`cartflow images push`: build every image, tag git sha + version, push with the docker SDK to
a local registry (Debian's `docker-registry` on 127.0.0.1, temp config/storage: the e2e
conftest's ``local_registry``), pull back by digest. The ECR login path is checked against
a stubbed ECR client.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest

from cartflow.infra import images
from tests.e2e.conftest import record_metric

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]


def test_push_every_image_and_pull_back_by_digest(local_registry: str) -> None:
    import docker

    client = docker.from_env(timeout=600)
    t0 = time.monotonic()
    built = images.build_images(client=client)
    record_metric("images_build_seconds", round(time.monotonic() - t0, 1))
    assert {b.name for b in built} == set(images.IMAGES)
    sha, version = images.git_sha(), images.project_version()
    for b in built:
        assert b.tags == (sha, version)
        labels = client.images.get(b.image_id).labels
        assert labels["org.opencontainers.image.revision"] == sha
        assert labels["org.opencontainers.image.version"] == version
    record_metric("image_sizes_mb", {b.repository: round(client.images.get(b.image_id).attrs["Size"] / 1e6) for b in built})

    t0 = time.monotonic()
    pushed = images.push_images(built, f"{local_registry}/e2e", client=client)
    record_metric("images_push_seconds", round(time.monotonic() - t0, 1))
    assert len(pushed) == 2 * len(built)

    for p in pushed:
        repo = p.reference.rsplit(":", 1)[0]
        path = repo.split("/", 1)[1]
        tags = json.load(urllib.request.urlopen(f"http://{local_registry}/v2/{path}/tags/list"))["tags"]
        assert p.reference.rsplit(":", 1)[1] in tags
        # Drop the registry tag locally, then pull by digest: the registry must serve it.
        client.images.remove(p.reference)
        pulled = client.images.pull(repo, tag=p.digest)
        built_id = next(b.image_id for b in built if b.name == p.name)
        assert pulled.id == built_id, (p, pulled.id, built_id)
        client.images.remove(p.by_digest)


def test_cli_push_prints_digests_as_json(local_registry: str) -> None:
    from typer.testing import CliRunner

    from cartflow.cli.images import images_app

    result = CliRunner().invoke(
        images_app, ["push", "--registry", f"{local_registry}/cli", "--only", "services", "--quiet", "--json"]
    )
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.stdout)
    assert {p["name"] for p in pushed} == {"services"}
    assert all(p["digest"].startswith("sha256:") and "@sha256:" in p["by_digest"] for p in pushed)
    import docker

    client = docker.from_env()
    for p in pushed:  # leave no registry-named tags behind in the engine
        client.images.remove(p["reference"])


def test_registry_parsing_and_ecr_login_with_a_stubbed_ecr() -> None:
    import boto3
    from botocore.stub import Stubber

    assert images.split_registry("127.0.0.1:5000/team/x/") == ("127.0.0.1:5000", "team/x")
    assert images.ecr_auth("127.0.0.1:5000") is None

    host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="eu-west-1")
    client = session.client("ecr", region_name="eu-west-1")
    stub = Stubber(client)
    token = base64.b64encode(b"AWS:not-a-real-password").decode()
    stub.add_response(
        "get_authorization_token",
        {"authorizationData": [{"authorizationToken": token, "proxyEndpoint": f"https://{host}"}]},
        {"registryIds": ["123456789012"]},
    )

    class _Session:
        def client(self, name: str, region_name: str) -> object:
            assert (name, region_name) == ("ecr", "eu-west-1")
            return client

    with stub:
        auth = images.ecr_auth(host, session=_Session())
    assert auth == {"username": "AWS", "password": "not-a-real-password", "serveraddress": f"https://{host}"}
