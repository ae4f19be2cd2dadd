"""The deploy artifact bucket: where `cartflow deploy` puts the template for CloudFormation.

CloudFormation takes a template of at most 51,200 bytes in the request itself and 1 MB from
S3; the generated template is larger than the first. The stack's own data bucket cannot hold
it (the stack creates that bucket), so the template goes to a bucket of its own, created on
first use like the ECR repositories: ``cartflow-deploy-<account>-<region>`` unless named,
public access blocked, encrypted (SSE-S3), TLS only. Objects are keyed by content
(``templates/<stack>/<sha256>.json``), so a re-run uploads nothing new.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cartflow.core.exceptions import CartflowError

PREFIX = "templates/"


class ArtifactError(CartflowError, RuntimeError):
    """The artifact bucket cannot be used; the message says why."""


def default_bucket(account: str, region: str) -> str:
    return f"cartflow-deploy-{account}-{region}"


def template_key(stack: str, body: str) -> str:
    return f"{PREFIX}{stack}/{hashlib.sha256(body.encode()).hexdigest()}.json"


def template_url(bucket: str, key: str, region: str, endpoint_url: str | None = None) -> str:
    """The TemplateURL CloudFormation reads: the regional virtual-hosted URL on AWS; an
    emulator's own endpoint, path-style (MiniStack reads ``<endpoint>/<bucket>/<key>``)."""
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{bucket}/{key}"
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def _tls_only(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "TlsOnly",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


def ensure_bucket(s3: Any, bucket: str, region: str, *, tls_only: bool = True) -> bool:
    """Create the bucket if it does not exist (True if it was created). ``tls_only``: deny plain
    HTTP (off against an emulator, which serves http://)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise ArtifactError(f"artifact bucket {bucket}: {code or exc} (pass --artifact-bucket to use another)") from exc
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    if tls_only:
        s3.put_bucket_policy(Bucket=bucket, Policy=_tls_only(bucket))
    return True


def upload_template(s3: Any, bucket: str, stack: str, body: str, region: str, endpoint_url: str | None = None) -> str:
    """Put the template in the artifact bucket (created if missing); returns its TemplateURL."""
    from botocore.exceptions import ClientError

    key = template_key(stack, body)
    try:
        ensure_bucket(s3, bucket, region, tls_only=endpoint_url is None)
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")
    except ClientError as exc:
        raise ArtifactError(f"cannot put the template in s3://{bucket}/{key}: {exc}") from exc
    return template_url(bucket, key, region, endpoint_url)
