"""cartflow/infra/artifacts.py: the template goes to the artifact bucket, created locked down on
first use; CloudFormation gets its URL (botocore's Stubber stands in for S3: no network)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from cartflow.infra import artifacts

BODY = '{"Resources": {}}'


def _s3() -> Any:
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="eu-west-1")
    return session.client("s3", region_name="eu-west-1")


def test_a_missing_bucket_is_created_locked_down_then_the_template_uploaded() -> None:
    s3 = _s3()
    bucket, key = "cartflow-deploy-123456789012-eu-west-1", artifacts.template_key("prod", BODY)
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404, expected_params={"Bucket": bucket})
        stub.add_response(
            "create_bucket",
            {},
            {"Bucket": bucket, "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
        )
        block = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        stub.add_response("put_public_access_block", {}, {"Bucket": bucket, "PublicAccessBlockConfiguration": block})
        stub.add_response("put_bucket_encryption", {}, {"Bucket": bucket, "ServerSideEncryptionConfiguration": ANY})
        stub.add_response("put_bucket_policy", {}, {"Bucket": bucket, "Policy": ANY})
        stub.add_response(
            "put_object", {}, {"Bucket": bucket, "Key": key, "Body": BODY.encode(), "ContentType": "application/json"}
        )
        url = artifacts.upload_template(s3, bucket, "prod", BODY, "eu-west-1")
        stub.assert_no_pending_responses()
    assert url == f"https://{bucket}.s3.eu-west-1.amazonaws.com/{key}"
    assert key.startswith("templates/prod/") and key.endswith(".json")


def test_an_existing_bucket_only_gets_the_object_and_an_emulator_gets_its_path_style_url() -> None:
    s3 = _s3()
    key = artifacts.template_key("it", BODY)
    with Stubber(s3) as stub:
        stub.add_response("head_bucket", {}, {"Bucket": "b"})
        stub.add_response("put_object", {}, {"Bucket": "b", "Key": key, "Body": ANY, "ContentType": "application/json"})
        url = artifacts.upload_template(s3, "b", "it", BODY, "eu-west-1", endpoint_url="http://172.17.0.1:4566/")
    assert url == f"http://172.17.0.1:4566/b/{key}"  # MiniStack reads <endpoint>/<bucket>/<key>


def test_the_same_template_is_the_same_key_and_a_denied_bucket_is_one_clear_error() -> None:
    assert artifacts.template_key("s", BODY) == artifacts.template_key("s", BODY) != artifacts.template_key("s", BODY + " ")
    s3 = _s3()
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        with pytest.raises(artifacts.ArtifactError, match=r"artifact bucket taken: 403.*--artifact-bucket"):
            artifacts.upload_template(s3, "taken", "s", BODY, "eu-west-1")


def test_the_bucket_policy_refuses_plain_http() -> None:
    policy = json.loads(artifacts._tls_only("b"))
    (stmt,) = policy["Statement"]
    assert (stmt["Effect"], stmt["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    assert stmt["Resource"] == ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]
