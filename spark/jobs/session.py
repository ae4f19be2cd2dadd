"""The one SparkSession factory: Delta Lake + S3A, jars from the local cache only.

Jars come from ``settings.jars_dir`` as pinned in ``jars.lock`` (fill it with
``python spark/fetch_jars.py`` / ``make jars``; images bake it). Nothing is resolved or
downloaded at session start (no ``spark.jars.packages``, no ivy), and there is no Hive.

Static settings (classpath, memory, Delta extension) only apply to the first session of a
process: Spark reuses the running JVM for later ``getOrCreate`` calls.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyspark.sql import DataFrame, SparkSession

from cartflow.core.aws import session as aws_session
from cartflow.core.config import Settings
from spark.jobs.class_archive import archive_conf

LOCK_FILE = Path(__file__).with_name("jars.lock")

# S3A's own default chain covers env vars and ECS/EC2 container credentials (real AWS).
_S3A = "org.apache.hadoop.fs.s3a"
_SIMPLE_PROVIDER = f"{_S3A}.SimpleAWSCredentialsProvider"
_TEMPORARY_PROVIDER = f"{_S3A}.TemporaryAWSCredentialsProvider"


# ----------------------------------------------------------------------------- jars


def locked_jar_names(lock: Path = LOCK_FILE) -> list[str]:
    """Jar filenames from ``jars.lock`` (``group:artifact:version  sha256  filename`` lines)."""
    names = []
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].split()
        if line:
            names.append(line[-1])
    return names


def locked_jars(jars_dir: Path, lock: Path = LOCK_FILE) -> list[Path]:
    """Paths of the locked jars in ``jars_dir``; RuntimeError naming what is missing.

    Presence only: ``fetch_jars.py`` verified each sha256 and writes atomically.
    """
    paths = [jars_dir / name for name in locked_jar_names(lock)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise RuntimeError(
            f"Spark jars missing from {jars_dir}: {shown}. "
            "Run `python spark/fetch_jars.py` / `make jars` (or set CARTFLOW_JARS_DIR to the baked-in directory)."
        )
    return paths


# ----------------------------------------------------------------------------- config


# An idle JVM keeps the heap its last batch grew: G1 gives memory back only after a GC, and
# an idle JVM runs none. A periodic GC after 30 s without one, and a heap shrunk to 30 % free
# after it, return that memory while a stack waits for uploads. It costs GC work during a
# batch (measured: `make demo` ~3-5 s slower), so only compose, whose memory is a budget,
# sets it (CARTFLOW_SPARK_JAVA_OPTIONS; docs/benchmarks.md).
IDLE_HEAP_OPTIONS = "-XX:G1PeriodicGCInterval=30000 -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30"


def spark_conf(settings: Settings, jars: list[Path]) -> dict[str, str]:
    """Static Spark config (no secrets: these end up on the spark-submit command line)."""
    conf = {
        "spark.jars": ",".join(str(p) for p in jars),
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Fast, self-contained JVM start: no Hive metastore, no UI.
        "spark.sql.catalogImplementation": "in-memory",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",  # \r progress bars garble job logs
        # KPI dates must not depend on the host's timezone.
        "spark.sql.session.timeZone": "UTC",
        # Delta replays a table's log (state reconstruction) with 50 tasks by default. Here a
        # replay is a checkpoint plus < 10 small commits: one task does it; more are only
        # scheduling cost, paid per table written or read in every batch.
        "spark.databricks.delta.snapshotPartitions": "1",
        # The jobs cache a batch's checked rows for a few actions and drop them: encoding the
        # cache costs more than memory it saves (measured: ~2 s per million rows).
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        # Per-batch inputs are small: adaptive execution turns every shuffle of every action
        # (and of Delta's own log-replay queries) into a separately planned Spark job, a
        # fixed cost per batch that dwarfs the work. Static plans: one job per action.
        "spark.sql.adaptive.enabled": str(settings.spark_adaptive_execution).lower(),
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": settings.region,
    }
    if settings.spark_java_options:
        conf |= dict.fromkeys(("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"), settings.spark_java_options)
    if settings.spark_master.startswith("local"):
        # One JVM: skip the hostname/interface lookup (and its loopback warning).
        conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    else:
        conf |= _driver_network_conf(settings)
    if settings.aws_endpoint_url:
        conf |= _emulator_s3a_conf(settings.aws_endpoint_url)
    # Delta on s3a uses S3SingleDriverLogStore by default: safe while one driver at a time
    # writes a given table (one batch in flight); several drivers need the DynamoDB LogStore.
    if settings.delta_multi_writer:
        conf |= delta_log_store_conf(settings, jars)
    return conf


# The multi-writer LogStore: every commit is a conditional put of its entry in a DynamoDB
# table (spec table delta_log_table), so two drivers can never both write version N.
LOG_STORE_CLASS = "io.delta.storage.S3DynamoDBLogStore"
LOG_STORE_JAR = "delta-storage-s3-dynamodb-"
_LOG_STORE_CONF = f"spark.io.delta.storage.{LOG_STORE_CLASS.rsplit('.', 1)[1]}"


def delta_log_store_conf(settings: Settings, jars: list[Path]) -> dict[str, str]:
    """S3DynamoDBLogStore for s3a:// tables; RuntimeError when its jar is not locked.

    The LogStore builds its own DynamoDB client. At Delta 4.4.0 that is AWS SDK v1 (its jars
    are not locked either), credentials from ``…credentials.provider`` and the endpoint from
    ``…ddb.region`` alone: it has no endpoint key and ignores AWS_ENDPOINT_URL, so pointing it
    at an emulator needs more than this conf (docs/deploy.md).
    """
    if not any(p.name.startswith(LOG_STORE_JAR) for p in jars):
        raise RuntimeError(
            f"CARTFLOW_DELTA_MULTI_WRITER needs io.delta:delta-storage-s3-dynamodb in spark/jobs/jars.lock "
            f"({LOG_STORE_CLASS}); it is not locked, so commits stay single-writer: turn the setting off"
        )
    return {
        "spark.delta.logStore.s3a.impl": LOG_STORE_CLASS,
        f"{_LOG_STORE_CONF}.ddb.tableName": settings.delta_log_table,
        f"{_LOG_STORE_CONF}.ddb.region": settings.region,
    }


def _driver_network_conf(settings: Settings) -> dict[str, str]:
    """Where executors on other hosts reach the driver (fixed ports so they can be published)."""
    wanted = {
        "spark.driver.host": settings.spark_driver_host,
        "spark.driver.bindAddress": settings.spark_driver_bind_address,
        "spark.driver.port": settings.spark_driver_port,
        "spark.blockManager.port": settings.spark_block_manager_port,
    }
    return {k: str(v) for k, v in wanted.items() if v is not None}


def _emulator_s3a_conf(endpoint: str) -> dict[str, str]:
    return {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
    }


def s3a_credentials(settings: Settings) -> dict[str, str]:
    """Hadoop keys carrying credentials for an emulator endpoint; {} on real AWS.

    Real AWS (ECS Fargate) keeps S3A's default provider chain, which reads the task role
    from the container credentials endpoint: no secret ever passes through cartflow.
    """
    if not settings.aws_endpoint_url:
        return {}
    # The same credentials as the job's boto3 clients (an emulator's dummy key if the chain has none).
    creds = aws_session(settings).get_credentials()
    if creds is None:  # pragma: no cover - aws_session() always has a key against an endpoint
        raise RuntimeError("no AWS credentials found by boto3 (emulators take any, e.g. AWS_ACCESS_KEY_ID=test)")
    frozen = creds.get_frozen_credentials()
    keys = {
        "fs.s3a.access.key": frozen.access_key,
        "fs.s3a.secret.key": frozen.secret_key,
        "fs.s3a.aws.credentials.provider": _SIMPLE_PROVIDER,
    }
    if frozen.token:
        keys |= {"fs.s3a.session.token": frozen.token, "fs.s3a.aws.credentials.provider": _TEMPORARY_PROVIDER}
    return keys


# ----------------------------------------------------------------------------- session


def build_spark(settings: Settings, app_name: str = "cartflow", extra_conf: dict[str, str] | None = None) -> SparkSession:
    """SparkSession on ``settings.spark_master`` with Delta and S3A configured.

    ``extra_conf``: more static settings on top (the bench turns Spark's event log on with it).
    """
    builder = SparkSession.builder.appName(app_name).master(settings.spark_master)
    jars = locked_jars(settings.jars_dir)
    conf = spark_conf(settings, jars)
    conf |= archive_conf(settings, jars, conf.get("spark.driver.extraJavaOptions", "")) | (extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # Secrets go into the live Hadoop conf, not the spark-submit argv (visible in `ps`).
    # Spark ships this conf with every read/write task, so executors see it too.
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in s3a_credentials(settings).items():
        hadoop_conf.set(key, value)
    return spark


# Input bytes one shuffle partition should carry: CSV text, or Parquet at ~1/4 of its size.
SHUFFLE_CSV_BYTES = 32 << 20
SHUFFLE_PARQUET_BYTES = 8 << 20


def fit_shuffle_partitions(spark: SparkSession, settings: Settings, input_bytes: int, per_partition: int) -> int:
    """Set the shuffle partitions for the next job from its input size and return them.

    ``settings.spark_shuffle_partitions`` is the ceiling; a small batch gets fewer (whole
    multiples of the cores), since every partition of every shuffle is a task to schedule.
    """
    cores = max(1, spark.sparkContext.defaultParallelism)
    wanted = max(1, math.ceil(input_bytes / per_partition))
    partitions = min(settings.spark_shuffle_partitions, math.ceil(wanted / cores) * cores)
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return partitions


def estimated_bytes(frame: DataFrame) -> int:
    """The optimizer's size estimate of ``frame`` (for a Delta table: its files' total size)."""
    return int(str(frame._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))  # a Scala BigInt


def to_spark_uri(uri: str) -> str:
    """``s3://bucket/key`` -> ``s3a://bucket/key``; file:// URIs decoded; local paths pass through.

    Hadoop paths are raw strings: ``new Path("s3a://b/raw/orders/a b.csv")`` reads the key
    ``raw/orders/a b.csv`` (spaces and non-ASCII letters as they are), while ``%20`` would be
    read as the three characters ``%20``. S3 URIs here carry raw keys (the raw-key rules refuse
    ``%``), so they pass unchanged; a ``file://`` URI is percent-encoded (``Path.as_uri()``,
    and Storage decodes it too), so it is decoded.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a"):
        if not parts.netloc:
            raise ValueError(f"S3 URI without a bucket: {uri!r}")
        return "s3a" + uri[len(parts.scheme) :]
    if scheme == "file":
        return f"{uri[: len(parts.scheme)]}://{parts.netloc}{unquote(parts.path)}" if "%" in uri else uri
    if scheme == "" and uri:
        return uri
    raise ValueError(f"unsupported URI scheme for Spark: {uri!r} (use s3://, s3a://, file:// or a local path)")


def discard_session(spark: SparkSession | None) -> None:
    """The JVM behind ``spark`` died: drop PySpark's process-wide handles to it.

    ``getOrCreate`` would otherwise hand back the dead session (its gateway refuses every
    call) instead of starting a new JVM.
    """
    from pyspark import SparkContext

    if spark is not None:
        # Best effort: with its JVM gone, stop() usually fails; the handles are dropped below anyway.
        with contextlib.suppress(Exception):
            spark.stop()
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None
