"""Security basics: S3 keys we accept, archive targets, non-root images, no credentials in the repo.

IAM ("no `*` action, no `*` resource on data resources") is pinned by tests/unit/test_iam.py
(test_no_wildcard_actions, test_no_star_resource_except_where_aws_requires_it,
test_every_resource_is_a_spec_resource); the one test here adds the data-service view.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
from pathlib import Path
from urllib.parse import quote_plus, unquote

import pytest

from cartflow.core.models import PROCESSED_PREFIX, BatchInput, InvalidRawKey, RawFile
from cartflow.core.spec import defaults, load_spec
from cartflow.infra import iam
from services.ingest import S3ObjectCreated, event_item, parse_s3_notification

REPO = Path(__file__).resolve().parents[2]
BUCKET = "cartflow-data"
DATA_SERVICES = ("s3", "dynamodb", "sqs", "sns")


# ------------------------------------------------------------------------------ IAM


@pytest.mark.parametrize("target", ["local", "aws"])
def test_no_data_permission_is_wildcarded(target: str) -> None:
    values = {**defaults(load_spec()), "state_machine_target": target}
    for principal, doc in iam.policies(values).items():
        for stmt in doc["Statement"]:
            actions = [stmt["Action"]] if isinstance(stmt["Action"], str) else stmt["Action"]
            resources = [stmt["Resource"]] if isinstance(stmt["Resource"], str) else stmt["Resource"]
            assert all("*" not in a for a in actions), (principal, actions)
            data = [a for a in actions if a.split(":")[0] in DATA_SERVICES]
            if not data:
                continue
            # dynamodb:ListStreams has no resource-level permission; it reads no data.
            if data != ["dynamodb:ListStreams"]:
                assert "*" not in resources, (principal, stmt)
            for r in resources:
                if r == "*":
                    continue
                # arn:aws:<svc>:<region>:<account>:<resource>: a named resource, not a service-wide glob.
                name = r.split(":", 5)[-1]
                assert name not in ("", "*", "table/*", "*/*"), (principal, r)


# ------------------------------------------------------------------------------ S3 keys

TRAVERSAL_KEYS = [
    "raw/orders/../../x.csv",
    "raw/orders/../x.csv",
    "raw/../raw/orders/x.csv",
    "/raw/orders/x.csv",
    "raw//orders/x.csv",
    "raw/orders\\..\\..\\x.csv",
    "raw\\orders\\x.csv",
    "raw/orders/%2e%2e/x.csv",
    "raw/orders/%2E%2E/%2e%2e/x.csv",
    "raw/orders/..%2fx.csv",
    "raw/orders/%252e%252e/x.csv",
    "raw/orders/x.csv\x00.png",
    "raw/orders/ x.csv",
    "raw/orders/x.csv ",
    "raw/orders/~/x.csv",
    # The wider name charset (spaces, parentheses, non-ASCII letters) still refuses these:
    "raw/orders/a\u202egpj.csv",  # right-to-left override: the name would display reversed
    "raw/orders/a\u200bb.csv",  # zero-width space
    "raw/orders/a\u00a0b.csv",  # no-break space
    "raw/orders/a\nb.csv",
    "raw/orders/a\rb.csv",
    "raw/orders/a%20b.csv",  # Hadoop paths would not decode it, S3 keys never contain it decoded
    "raw/orders/a+b.csv",
    "raw/orders/a*.csv",
    "raw/orders/a[1].csv",
    "raw/orders/{a,b}.csv",
    "raw/orders/a?.csv",
    "raw/orders/a:b.csv",
    "raw/orders/a#b.csv",
    'raw/orders/a"b.csv',
    "raw/orders/a'b.csv",
    "raw/orders/a$b.csv",
    "raw/orders/..\u0301/x.csv",
    "raw/orders/x.csv\x00",
    "raw/orders/x.zip",
    "raw/orders/x.csv.zip",
    "raw/orders/x.tar.gz",
]


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
def test_traversal_and_odd_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidRawKey):
        RawFile.parse(BUCKET, key)


def test_dot_segments_are_rejected() -> None:
    """Hadoop/Spark Path normalisation would read raw/orders/x.csv for raw/orders/./x.csv."""
    with pytest.raises(InvalidRawKey):
        RawFile.parse(BUCKET, "raw/orders/./x.csv")


@pytest.mark.parametrize("encoded", ["raw/orders/%2e%2e/x.csv", "raw/orders/..%2F..%2Fx.csv", "raw%2Forders%2F..%2Fx.csv"])
def test_url_encoded_traversal_in_a_notification_is_recorded_rejected(encoded: str) -> None:
    """S3 URL-encodes keys in notifications; ingest decodes first, then validates."""
    from types import SimpleNamespace

    from cartflow.core.config import Settings
    from cartflow.core.deps import Deps

    body = (
        '{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2025-07-08T10:00:00Z","s3":{"bucket":{"name":"'
        + BUCKET
        + '"},"object":{"key":"'
        + encoded
        + '","size":1,"eTag":"e","sequencer":"1"}}}]}'
    )
    [obj] = parse_s3_notification(body)
    assert ".." in obj.key  # decoded
    deps = Deps(settings=Settings(), clients=SimpleNamespace(), clock=lambda: 0.0)  # type: ignore[arg-type]
    item = event_item(S3ObjectCreated(BUCKET, obj.key, 0.0, 1, "e", "1"), deps)
    assert item["status"] == "rejected" and "unbatched" not in item


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("raw/orders/2025 08 01 export (1).csv", "raw/orders/2025+08+01+export+%281%29.csv"),
        ("raw/orders/ünïcode.csv", "raw/orders/%C3%BCn%C3%AFcode.csv"),
        ("raw/orders/orders.csv.gz", "raw/orders/orders.csv.gz"),
    ],
)
def test_exported_names_arrive_url_encoded_and_are_accepted(key: str, encoded: str) -> None:
    """S3 notifications URL-encode keys (space as '+'); ingest decodes, then the key rules accept the name."""
    from types import SimpleNamespace

    from cartflow.core.config import Settings
    from cartflow.core.deps import Deps

    assert quote_plus(key, safe="/") == encoded  # what S3 sends, as documented for event notifications
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2025-07-08T10:00:00Z",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": encoded, "size": 1, "eTag": "e", "sequencer": "1"}},
                }
            ]
        }
    )
    [obj] = parse_s3_notification(body)
    assert obj.key == key
    deps = Deps(settings=Settings(bucket=BUCKET), clients=SimpleNamespace(), clock=lambda: 0.0)  # type: ignore[arg-type]
    item = event_item(obj, deps)
    assert item["status"] == "received" and item["s3_path"] == f"s3://{BUCKET}/{key}"


VALID_KEYS = [
    "raw/orders/orders.csv",
    "raw/orders/orders.csv.gz",
    "raw/orders/2025 08 01 export (1).csv",
    "raw/orders/ünïcode.csv",
    "raw/orders/u\u0308nicode.csv",  # decomposed ü (macOS file names)
    "raw/products/東京/商品.csv",
    "raw/order_items/2025/07/08/items_part-1.csv",
    "raw/products/p=1/x.y.csv",
    "raw/order_lines/A-b_c=d.CSV",
]


def test_archive_targets_stay_under_their_batch_prefix() -> None:
    files = [RawFile.parse(BUCKET, k) for k in VALID_KEYS]
    batch = BatchInput.from_files(
        batch_id="b1751968800000-2025-07-08-000", group_key="2025-07-08", bucket=BUCKET, processing_date="2025-07-09", files=files
    )
    prefix = f"{PROCESSED_PREFIX}{batch.batch_id}/"
    assert len(batch.archive) == len(VALID_KEYS)
    for item in batch.archive:
        assert item.archive_key.startswith(prefix) and posixpath.normpath(item.archive_key) == item.archive_key
        # CopyObject's source is URL-encoded (S3 decodes it): a key with spaces or unicode survives.
        assert unquote(item.read_source) == f"{BUCKET}/{item.source_key}" and item.source_key.startswith("raw/")
        assert unquote(item.copy_source) == f"{BUCKET}/{item.staged_key}"
        assert item.staged_key.startswith(f"staging/{batch.batch_id}/")
        assert posixpath.normpath(item.staged_key) == item.staged_key
        assert item.copy_source.isascii() and " " not in item.copy_source and item.read_source.isascii()
        assert item.archive_key[len(prefix) :] == item.source_key[len("raw/") :]


def test_batch_id_cannot_steer_the_archive_prefix() -> None:
    with pytest.raises(ValueError):
        BatchInput.from_files(batch_id="../../x", group_key="g", bucket=BUCKET, processing_date="2025-07-09", files=[])


# ------------------------------------------------------------------------------ containers


def final_user(dockerfile: Path) -> str | None:
    """The USER in effect in the last stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    user = None
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            user = None  # every stage starts as root again
        elif words[0].upper() == "USER" and len(words) == 2:
            user = words[1].strip()
    return user


@pytest.mark.parametrize("dockerfile", ["services/Dockerfile", "spark/Dockerfile"])
def test_images_run_as_a_non_root_user(dockerfile: str) -> None:
    user = final_user(REPO / dockerfile)
    assert user, f"{dockerfile}: the final stage sets no USER (runs as root)"
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), f"{dockerfile}: USER {user}"


def test_final_user_parser_sees_through_stages(tmp_path: Path) -> None:
    f = tmp_path / "Dockerfile"
    f.write_text("FROM a AS build\nUSER app\nFROM b\nRUN x \\\n  && y\n")
    assert final_user(f) is None
    f.write_text("FROM b\nUSER 10001:10001\n# USER root\n")
    assert final_user(f) == "10001:10001"


# ------------------------------------------------------------------------------ credentials

ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY( BLOCK)?-----")
SECRET_ASSIGNMENT = re.compile(r"""(?i)aws_secret_access_key["']?\s*[:=,]\s*["']?([^\s"',)}]*)""")
# The emulator's documented dummy, and references that are not values.
ALLOWED_SECRET = re.compile(r"^(?:test|\$\{?[A-Za-z_][A-Za-z0-9_]*(?::-test)?\}?|<[^>]*>|\.\.\.|)$")


def findings(name: str, text: str) -> list[str]:
    out = [f"{name}: AWS access key id {m.group(0)[:8]}..." for m in ACCESS_KEY.finditer(text)]
    out += [f"{name}: private key block" for _ in PRIVATE_KEY.finditer(text)]
    for m in SECRET_ASSIGNMENT.finditer(text):
        value = m.group(1)
        # Code that passes a variable (aws_secret_access_key=secret) is not a literal secret.
        literal = text[m.start(1) - 1] in "\"'" or len(value) >= 20
        if literal and not ALLOWED_SECRET.match(value):
            out.append(f"{name}: aws_secret_access_key = {value[:4]}...")
    return out


def repo_files() -> list[Path]:
    """Tracked files plus untracked, not-ignored ones (about to be committed)."""
    res = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    )
    return [REPO / p for p in sorted(set(res.stdout.decode().split("\0"))) if p and (REPO / p).is_file()]


def test_no_credentials_in_the_repository() -> None:
    files = repo_files()
    assert len(files) > 50
    found = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        found += findings(str(path.relative_to(REPO)), data.decode("utf-8", errors="replace"))
    assert not found, "\n".join(found)


def test_the_scanner_finds_what_it_looks_for() -> None:
    key_id = "AKIA" + "ABCDEFGHIJKLMNOP"
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
    pem = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIB\n"
    assert findings("x", f"id = {key_id}")
    assert findings("x", pem)
    var = "aws_secret_" + "access_key"  # split so this file does not match itself
    assert findings("x", f"{var} = {secret}")
    assert findings("x", f'"{var.upper()}": "{secret}"')
    for ok in (
        'aws_secret_access_key="test"',
        "AWS_SECRET_ACCESS_KEY: ${AWS_SECRET_ACCESS_KEY:-test}",
        'env.setdefault("AWS_SECRET_ACCESS_KEY", "test")',
        "aws_secret_access_key=secret_key,",
        "AWS_SECRET_ACCESS_KEY=test",
    ):
        assert not findings("x", ok), ok
