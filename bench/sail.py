"""cartflow's job code on Sail (a Rust engine behind the Spark Connect protocol), vs DuckDB.

An evaluation, not a supported engine: ``python -m bench.sail --remote sc://127.0.0.1:50051``
runs ``run_validation`` + ``run_transform`` through a Spark Connect client on one generated
flat batch, then the bench's DuckDB engine on the same file, and compares counts, reasons
and every KPI value. Needs an environment with ``pysail`` and ``pyspark[connect]`` (pandas,
pyarrow, grpcio), a running ``sail spark server``; the project itself does not depend on them.

Each shim below is something the job code uses that Sail 0.7 lacks (docs/benchmarks.md):

* CSV: no PERMISSIVE mode and no corrupt-record column; a short or long row fails the
  whole read, so malformed rows are dropped from the input before both engines see it;
* Delta: ``replaceWhere`` on a table that does not exist yet fails (Spark's Delta creates
  it), and ``DeltaTable.isDeltaTable`` is delta-spark's JVM API;
* no JVM behind the session: the optimizer's size estimate and ``defaultParallelism``
  (shuffle partitions fitted per batch) do not exist, so they are skipped.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import parse_size


def _has_delta_log(uri: str) -> bool:
    return (Path(uri.removeprefix("file://")) / "_delta_log").is_dir()


def install_shims() -> None:
    """Patch the few job functions that need the JVM or a Spark CSV/Delta feature Sail lacks."""
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    import spark.jobs.delta_io as dio
    import spark.jobs.transform as tr
    import spark.jobs.validation.files as vf
    import spark.jobs.validation.job as vj
    import spark.jobs.validation.output as vo
    import spark.jobs.validation.reading as rd
    import spark.jobs.validation.references as vr

    def read_delta_if_exists(spark: SparkSession, uri: str) -> DataFrame | None:
        path = dio.to_spark_uri(uri)
        return spark.read.format("delta").load(path) if _has_delta_log(path) else None

    for module in (dio, tr, vf, vr):
        module.read_delta_if_exists = read_delta_if_exists  # type: ignore[attr-defined]
    tr.estimated_bytes = lambda frame: 0
    tr.fit_shuffle_partitions = vj.fit_shuffle_partitions = lambda *a, **k: 0

    def read_one_file(spark: SparkSession, contract: Any, source: Any) -> DataFrame:
        header = source.inspection.header
        positional = [f"_c{i}" for i in range(len(header))]
        schema = T.StructType([T.StructField(n, T.StringType()) for n in positional])
        uri = getattr(source, "location", source.uri)
        frame = spark.read.csv(rd.to_spark_uri(uri), schema=schema, header=True, encoding="UTF-8", escape='"')
        position = {name: i for i, name in enumerate(header)}
        return frame.select(
            *[F.col(positional[position[c]]).alias(c) for c in contract.column_names],
            F.lit(None).cast("string").alias(rd.RAW_RECORD),
            F.lit(source.uri).alias(rd.SOURCE_FILE),
            F.spark_partition_id().alias(rd._PID),
            F.monotonically_increasing_id().alias(rd._POS),
        )

    rd._read_one_file = read_one_file

    original_replace = vo.replace_batch_rows

    def replace_batch_rows(frame: DataFrame, uri: str, *args: Any, **kwargs: Any) -> None:
        path = dio.to_spark_uri(uri)
        if _has_delta_log(path):
            original_replace(frame, uri, *args, **kwargs)
            return
        partition_by = args[1] if len(args) > 1 else kwargs.get("partition_by", "processing_date")
        writer = frame.write.format("delta").mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(partition_by)
        writer.save(path)

    vo.replace_batch_rows = replace_batch_rows

    def write_kpi_copies(spark: SparkSession, warehouse: str, rows: Any, batch_id: str) -> None:
        if not rows.touched_dates:
            return
        dates = ", ".join(f"DATE'{d}'" for d in rows.touched_dates)
        for name, schema, items in (
            ("order_kpis", tr.kpis.ORDER_KPIS_SCHEMA, rows.order_rows),
            ("category_kpis", tr.kpis.CATEGORY_KPIS_SCHEMA, rows.category_rows),
        ):
            full = T.StructType([*schema.fields, T.StructField(tr.UPDATED_BY_BATCH, T.StringType())])
            path = dio.to_spark_uri(tr.join_uri(warehouse, tr.KPIS_PREFIX, name))
            data = [tr._delta_row(item, full, batch_id) for item in items]
            writer = tr.local_frame(spark, data, full).write.format("delta").mode("overwrite").partitionBy("order_date")
            if _has_delta_log(path):
                writer = writer.option("replaceWhere", f"order_date IN ({dates})")
            writer.save(path)

    tr.write_kpi_copies = write_kpi_copies


def drop_malformed(src: Path, dst: Path) -> int:
    """Copy ``src`` without rows whose field count differs from the header's; rows dropped."""
    dropped = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open(newline="") as fi, dst.open("w", newline="") as fo:
        reader, writer = csv.reader(fi), csv.writer(fo, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        for record in reader:
            if len(record) == len(header):
                writer.writerow(record)
            else:
                dropped += 1
    return dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sail", description=__doc__.splitlines()[0])
    ap.add_argument("--remote", default="sc://127.0.0.1:50051", help="the Sail server's Spark Connect URL")
    ap.add_argument("--rows", default="100k")
    ap.add_argument("--repeat", type=int, default=2, help="runs on the same session (the first one is cold)")
    a = ap.parse_args(argv)

    from pyspark.sql import SparkSession

    from bench.engines import MemorySink, _kpi_dicts, run_duckdb
    from cartflow.core.config import Settings
    from cartflow.core.models import BatchInput
    from cartflow.local.fixturegen import generate

    install_shims()
    from spark.jobs.transform import run_transform
    from spark.jobs.validation import run_validation

    rows = parse_size(a.rows)
    work = Path(tempfile.mkdtemp(prefix="cartflow-sail-"))
    try:
        (raw,) = generate("order_lines", rows, work / "raw", seed=7, invalid_fraction=0.01)["order_lines"]
        clean = work / "clean" / "order_lines" / raw.name
        print(f"{rows:,} rows, {drop_malformed(raw, clean)} malformed rows dropped (Sail cannot read them)", flush=True)
        spark = SparkSession.builder.remote(a.remote).getOrCreate()
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        settings = Settings(max_quarantined_share=1.0)
        sink = MemorySink()
        for r in range(a.repeat):
            warehouse = (work / f"warehouse-{r}").as_uri()
            batch = BatchInput(
                batch_id=f"sail-{r}", group_key="g", bucket="b", processing_date="2025-07-08", order_lines_paths=[clean.as_uri()]
            )
            t0 = time.perf_counter()
            validation = run_validation(spark, settings, batch, warehouse)
            t1 = time.perf_counter()
            run_transform(spark, settings, batch, warehouse, sink=sink)
            t2 = time.perf_counter()
            table = validation.tables["order_lines"]
            print(
                f"sail run {r}: validate {t1 - t0:.2f} s, KPIs {t2 - t1:.2f} s; {table.valid_rows:,} valid, {table.quarantined_rows:,} quarantined"
            )
        # A replay of the same batch must replace its rows (replaceWhere), not add them again.
        run_validation(spark, settings, batch, warehouse)
        run_transform(spark, settings, batch, warehouse, sink=sink)
        stored = spark.read.format("delta").load(f"{warehouse}/validated/order_lines").count()
        print(f"replay into the same warehouse: validated/order_lines holds {stored:,} rows (valid: {table.valid_rows:,})")
        duck = run_duckdb({"order_lines": [str(clean)]}, 1, 2)
        print(
            f"duckdb: validate {duck['runs'][0]['validate']:.2f} s, KPIs {duck['runs'][0]['kpis']:.2f} s; counts {duck['counts']}"
        )
        orders, categories = _kpi_dicts(sink.rows)
        differ = 0
        for mine, ref in ((orders, duck["order_kpis"]), (categories, duck["category_kpis"])):
            differ += len(set(mine) ^ set(ref))
            for key in set(mine) & set(ref):
                differ += sum(abs(Decimal(str(mine[key][k])) - Decimal(str(v))) > Decimal("0.0001") for k, v in ref[key].items())
        counts_equal = duck["counts"]["order_lines"] == {"valid": table.valid_rows, "quarantined": table.quarantined_rows}
        touched_equal = list(sink.rows.touched_dates) == list(duck["touched"])
        print(f"agreement: counts {counts_equal}, touched dates {touched_equal}, KPI values differing {differ}")
        return 0 if counts_equal and touched_equal and differ == 0 and stored == table.valid_rows else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
