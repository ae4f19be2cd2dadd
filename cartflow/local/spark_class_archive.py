"""Build the driver's class archive: ``python -m cartflow.local.spark_class_archive``.

Starts an emulator of its own, runs the spark-runner's warm-up batch (both shapes, over S3A:
the classes a real batch loads) in a child process whose JVM writes the archive when it
exits, and moves it into place (spark/jobs/class_archive.py says how sessions use it).
Idempotent: an archive matching the JVM and the jars is kept. Best effort: without it
sessions start as before, so a failed build is reported and exits 0 unless ``--strict``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cartflow.core.config import Settings, get_settings
from spark.jobs.class_archive import PREFIX, archive_path, dump_conf, java_binary
from spark.jobs.session import locked_jars

BUILD_TIMEOUT_S = 600.0


def build(settings: Settings, *, force: bool = False) -> Path | None:
    """The archive for this JVM and these jars, built when missing; None when it cannot be."""
    jars = locked_jars(settings.jars_dir)
    target = archive_path(settings, jars)
    if target is None:
        print("class archive: no java found; skipped", file=sys.stderr)
        return None
    if target.is_file() and not force:
        return target
    from cartflow.core.aws import AwsClients
    from cartflow.infra import apply_resources
    from cartflow.local.emulator import free_port, start_emulator

    started = time.monotonic()
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    with tempfile.TemporaryDirectory(prefix="cartflow-class-archive-") as tmp:
        local = settings.model_copy(update={"state_dir": Path(tmp) / "state", "spark_master": "local[2]"})
        emulator = start_emulator(local, port=free_port(), log_dir=Path(tmp))
        try:
            local = local.model_copy(update={"aws_endpoint_url": emulator.endpoint})
            apply_resources(local, AwsClients(local))
            env = {**os.environ, "CARTFLOW_AWS_ENDPOINT_URL": emulator.endpoint, "CARTFLOW_BUCKET": local.bucket}
            env.setdefault("AWS_ACCESS_KEY_ID", "test")  # the emulator's dummy credentials
            env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
            log = Path(tmp) / "dump.log"
            with log.open("wb") as out:
                done = subprocess.run(
                    [sys.executable, "-m", "cartflow.local.spark_class_archive", "--dump-to", str(partial)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
            if done.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
                tail = log.read_text(errors="replace")[-2000:]
                print(f"class archive: the dump run failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
                partial.unlink(missing_ok=True)
                return None
        finally:
            emulator.stop(timeout=5.0)
    partial.replace(target)  # atomic: a session never maps a half-written archive
    for old in settings.jars_dir.glob(f"{PREFIX}*.jsa"):
        if old != target:
            old.unlink(missing_ok=True)  # archives of earlier jars or JDKs fit nothing now
    size_mb = target.stat().st_size / 1e6
    print(f"class archive: {target.name}, {size_mb:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return target


def _dump(target: Path) -> None:
    """In the child: a warm-up batch in a JVM that writes ``target`` when this process exits."""
    from cartflow.local.spark_warmup import run_warmup_batch
    from spark.jobs.session import build_spark

    settings = get_settings().model_copy(update={"spark_master": "local[2]"})
    dump = dump_conf(locked_jars(settings.jars_dir), target, settings.spark_java_options)
    spark = build_spark(settings.model_copy(update={"spark_class_archive": False}), "cartflow-class-archive", extra_conf=dump)
    run_warmup_batch(spark, settings)
    gateway = spark.sparkContext._gateway
    if gateway is None:  # not a session this process launched: no JVM exit to wait for
        raise RuntimeError("the SparkSession has no JVM of its own")
    proc = gateway.proc  # the JVM: it exits when its stdin closes
    spark.stop()
    proc.stdin.close()
    proc.wait(BUILD_TIMEOUT_S)  # the archive is written on the JVM's way out: wait for it


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cartflow.local.spark_class_archive", description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when a matching archive exists")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the archive cannot be built")
    ap.add_argument("--dump-to", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.dump_to is not None:
        _dump(args.dump_to)
        return 0
    if java_binary() is None and not args.strict:
        return 0
    built = build(get_settings(), force=args.force)
    return 1 if built is None and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
