"""``python -m spark.jobs.submit {validate|transform} [--conf K=V ...] (--batch JSON | --batch-file PATH)``

The distributed engine's launch convention: the same job as ``spark-submit --master
<CARTFLOW_SPARK_MASTER> --deploy-mode client``. This container is the Spark driver, the
executors run elsewhere: pods of the same image on EKS (``k8s://``, cartflow/infra/distributed.py),
workers of the compose cluster locally (``spark://``). The entry point, its arguments, exit
codes and result (the last stdout line, and the result document in S3) are spark.jobs.__main__'s,
as for the Fargate task, which runs ``python -m spark.jobs`` in local[*].

What spark-submit needs when the JVM starts comes from the settings build_spark uses
(``spark_conf``): the locked jars on the driver's classpath, the driver heap, Delta, S3A.
``--conf`` adds what differs per pod (the executors' image, the driver pod's name and IP).
Secrets never pass through here: build_spark puts them in the live Hadoop configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from cartflow.core.config import Settings
from spark.jobs.__main__ import EXIT_BAD_INPUT, BadInput, load_batch, parse_args

ENTRY = Path(__file__).with_name("__main__.py")  # run by spark-submit as the application


def submit_command(
    settings: Settings, job_args: list[str], extra_conf: dict[str, str], spark_submit: str = "spark-submit"
) -> list[str]:
    """The spark-submit argv running ``spark.jobs.__main__`` with ``job_args``."""
    from spark.jobs.session import locked_jars, spark_conf  # pyspark: imported once the input is known good

    conf = spark_conf(settings, locked_jars(settings.jars_dir)) | extra_conf
    # Driver classpath and heap are fixed when spark-submit starts the JVM, not by the session.
    command = [spark_submit, "--master", settings.spark_master, "--deploy-mode", "client"]
    command += ["--driver-memory", conf.pop("spark.driver.memory"), "--jars", conf.pop("spark.jars")]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, str(ENTRY), *job_args]


def _conf_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("spark."):
        raise argparse.ArgumentTypeError(f"expected spark.KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None, exec_: Callable[[str, list[str]], object] = os.execvp) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m spark.jobs.submit", description=__doc__, add_help=False)
    parser.add_argument("--conf", type=_conf_pair, action="append", default=[])
    try:
        ours, job_args = parser.parse_known_args(args)
        # Bad input fails here, before a JVM starts (exit 2, as the entry point would).
        load_batch(parse_args(job_args))
        settings = Settings()
    except SystemExit as exc:  # argparse printed the usage error
        return 0 if exc.code == 0 else EXIT_BAD_INPUT
    except (BadInput, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    command = submit_command(settings, job_args, dict(ours.conf))
    sys.stdout.flush()
    exec_(command[0], command)  # the job's exit code is spark-submit's, which is the entry point's
    return 0


if __name__ == "__main__":
    sys.exit(main())
