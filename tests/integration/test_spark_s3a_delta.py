"""Spark runtime foundation against a real MiniStack: S3A reads/writes and Delta on s3a://.

Real JVM, real emulator process, no mocks. Needs the locked jars in Settings().jars_dir
(`python spark/fetch_jars.py`); the test fails with that instruction if they are missing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from deltalake import DeltaTable, QueryBuilder
from pyspark.sql import DataFrame, SparkSession

from cartflow.core.config import Settings
from spark.jobs.session import build_spark, spark_conf, to_spark_uri

DUMMY_CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
REGION = "us-east-1"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    # boto3 (and through it build_spark) reads credentials from the environment.
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**DUMMY_CREDS, "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(key, value)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="module")
def ministack(aws_env: None, emulator: str) -> str:
    """The project's own emulator fixture (tests/conftest.py installs and starts MiniStack)."""
    return emulator


@pytest.fixture(scope="module")
def settings(ministack: str) -> Settings:
    return Settings(aws_endpoint_url=ministack, region=REGION, bucket=f"it-{uuid.uuid4().hex[:12]}",
                    spark_master="local[2]", spark_shuffle_partitions=2)  # fmt: skip


@pytest.fixture(scope="module")
def bucket(settings: Settings) -> str:
    s3 = boto3.client("s3", endpoint_url=settings.aws_endpoint_url, region_name=settings.region)
    s3.create_bucket(Bucket=settings.bucket)
    return settings.bucket


@pytest.fixture(scope="module")
def spark(settings: Settings) -> Iterator[SparkSession]:
    started = time.perf_counter()
    session = build_spark(settings, app_name="it-spark-s3a-delta")
    print(f"\n[timing] build_spark (JVM start with locked jars): {time.perf_counter() - started:.2f}s")
    yield session
    session.stop()


def _storage_options(settings: Settings) -> dict[str, str]:
    assert settings.aws_endpoint_url
    return {
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        "AWS_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDS["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDS["AWS_SECRET_ACCESS_KEY"],
    }


ROWS = [
    # (order_id, batch_id, order_date, amount)
    ("o1", "b1", "2026-11-01", 10.0),
    ("o2", "b1", "2026-11-02", 20.5),
    ("o3", "b2", "2026-11-01", 7.25),
    ("o4", "b2", "2026-11-03", 99.0),
    ("o5", "b3", "2026-11-02", 1.0),
]
COLUMNS = ["order_id", "batch_id", "order_date", "amount"]


def _rows(df: DataFrame) -> set[tuple[str, str, str, float]]:
    return {(r.order_id, r.batch_id, r.order_date, r.amount) for r in df.select(*COLUMNS).collect()}


def _delta_rs_rows(uri: str, settings: Settings) -> set[tuple[str, str, str, float]]:
    # delta-rs' own SQL engine returns arro3 tables: no pyarrow/pandas needed in the venv.
    table = DeltaTable(uri, storage_options=_storage_options(settings))
    result = QueryBuilder().register("t", table).execute(f"SELECT {', '.join(COLUMNS)} FROM t").read_all()
    columns = [result.column(name).to_pylist() for name in COLUMNS]
    return set(zip(*columns, strict=True))


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/validated/x", "s3a://bucket/validated/x"),
        ("S3://bucket/k", "s3a://bucket/k"),
        ("s3a://bucket/k", "s3a://bucket/k"),
        ("file:///srv/x", "file:///srv/x"),
        ("/srv/x", "/srv/x"),
        ("relative/dir", "relative/dir"),
    ],
)
def test_to_spark_uri(uri: str, expected: str) -> None:
    assert to_spark_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3:///no-bucket", "hdfs://nn/x", "gs://b/k", "http://h/x", "s3n://b/k", ""])
def test_to_spark_uri_rejects(uri: str) -> None:
    with pytest.raises(ValueError):
        to_spark_uri(uri)


def test_spark_conf_real_aws_uses_default_provider_chain(tmp_path: Path) -> None:
    conf = spark_conf(Settings(aws_endpoint_url=None), [tmp_path / "a.jar"])
    assert "spark.hadoop.fs.s3a.endpoint" not in conf
    assert not any("key" in k or "credentials" in k for k in conf)
    assert conf["spark.jars"] == str(tmp_path / "a.jar")


def test_build_spark_without_jars_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"fetch_jars.py"):
        build_spark(Settings(jars_dir=tmp_path / "empty"))


# ----------------------------------------------------------------------------- integration


@pytest.mark.integration
def test_reads_raw_csv_via_s3_uri(spark: SparkSession, settings: Settings, bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=settings.aws_endpoint_url, region_name=settings.region)
    s3.put_object(Bucket=bucket, Key="raw/orders/a.csv", Body=b"order_id,amount\no1,1.5\no2,2.5\n")
    df = spark.read.option("header", True).csv(to_spark_uri(settings.s3_uri("raw/orders/")))
    assert sorted((r.order_id, r.amount) for r in df.collect()) == [("o1", "1.5"), ("o2", "2.5")]


@pytest.mark.integration
def test_plain_parquet_write_uses_s3a_rename(spark: SparkSession, settings: Settings, bucket: str) -> None:
    # FileOutputCommitter renames task output: exercises S3A copy (SDK transfer manager).
    uri = to_spark_uri(settings.s3_uri("scratch/parquet"))
    spark.createDataFrame(ROWS, COLUMNS).repartition(2).write.mode("overwrite").parquet(uri)
    assert _rows(spark.read.parquet(uri)) == set(ROWS)


@pytest.mark.integration
def test_delta_roundtrip_spark_and_delta_rs(spark: SparkSession, settings: Settings, bucket: str) -> None:
    uri = to_spark_uri(settings.s3_uri("validated/x"))
    df = spark.createDataFrame(ROWS, COLUMNS)

    started = time.perf_counter()
    df.write.format("delta").mode("overwrite").partitionBy("order_date").save(uri)
    written = time.perf_counter()
    back = _rows(spark.read.format("delta").load(uri))
    print(f"\n[timing] delta write {written - started:.2f}s, read {time.perf_counter() - written:.2f}s")

    assert back == set(ROWS)
    # An independent reader (delta-rs) sees the same table: log + partition layout are standard.
    assert _delta_rs_rows(settings.s3_uri("validated/x"), settings) == set(ROWS)
    partitions = DeltaTable(settings.s3_uri("validated/x"), storage_options=_storage_options(settings))
    assert partitions.metadata().partition_columns == ["order_date"]


@pytest.mark.integration
def test_replace_where_on_batch_id_keeps_other_batches(spark: SparkSession, settings: Settings, bucket: str) -> None:
    uri = to_spark_uri(settings.s3_uri("validated/replace_where"))
    spark.createDataFrame(ROWS, COLUMNS).write.format("delta").partitionBy("order_date").save(uri)

    # Re-running batch b1 (e.g. a retried Step Functions task) must replace only b1's rows,
    # even though batch_id is not a partition column.
    rerun = [("o1", "b1", "2026-11-01", 11.0), ("o6", "b1", "2026-11-04", 5.0)]
    (
        spark.createDataFrame(rerun, COLUMNS)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", "batch_id = 'b1'")
        .partitionBy("order_date")
        .save(uri)
    )

    expected = {r for r in ROWS if r[1] != "b1"} | set(rerun)
    assert _rows(spark.read.format("delta").load(uri)) == expected
    assert _delta_rs_rows(settings.s3_uri("validated/replace_where"), settings) == expected

    # A replaceWhere whose data violates the predicate is rejected, not silently widened.
    with pytest.raises(Exception, match=r"(?i)replaceWhere|does not conform|DELTA_REPLACE_WHERE_MISMATCH"):
        (
            spark.createDataFrame([("o9", "b2", "2026-11-01", 1.0)], COLUMNS)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", "batch_id = 'b1'")
            .save(uri)
        )
    assert _rows(spark.read.format("delta").load(uri)) == expected
