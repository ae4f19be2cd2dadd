"""Local (docker-compose.yml) and AWS (the CloudFormation template) give the functions and the
Spark jobs the same configuration, and run the same entry points of the same images.

The lists live in cartflow/infra/environment.py; here they are checked against the code that
reads settings (an AST scan), against docker-compose.yml and against the template.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cartflow.core.config import Settings
from cartflow.infra.cloudformation import FUNCTIONS, build_template
from cartflow.infra.environment import FROM_SPARK_IMAGE, FUNCTION_SETTINGS, JOB_SETTINGS, NOT_ON_AWS, env_name
from tests.cfn_resolve import resolve, sample_values

REPO = Path(__file__).resolve().parents[2]
FIELDS = set(Settings.model_fields)
FUNCTION_SOURCES = [
    *sorted((REPO / "services").glob("*.py")),
    REPO / "cartflow/core/aws.py",
    REPO / "cartflow/core/batch_table.py",  # the functions' batch_chunks table
]
JOB_SOURCES = [*sorted((REPO / "spark/jobs").rglob("*.py")), REPO / "cartflow/core/aws.py"]
COMPOSE_FUNCTIONS = ("ingest", "debouncer", "stream-trigger", "controller")


def _derived_fields() -> dict[str, set[str]]:
    """Settings methods/properties -> the fields they read (``self.x``), transitively."""
    tree = ast.parse((REPO / "cartflow/core/config.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    uses = {
        fn.name: {
            n.attr
            for n in ast.walk(fn)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
        }
        for fn in cls.body
        if isinstance(fn, ast.FunctionDef)
    }

    def expand(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for attr in uses.get(name, set()) - seen:
            out |= {attr} if attr in FIELDS else expand(attr, seen | {name})
        return out

    return {name: expand(name) for name in uses if not name.startswith("_")}


DERIVED = _derived_fields()


def fields_read(paths: Iterable[Path]) -> set[str]:
    """Every Settings field an attribute access in these modules may read (over-approximation)."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                if node.attr in FIELDS:
                    found.add(node.attr)
                elif node.attr in DERIVED:
                    found |= DERIVED[node.attr]
    return found


def names(fields: Iterable[str]) -> set[str]:
    return {env_name(f) for f in fields}


# ----------------------------------------------------------------------------- the lists vs the code


def test_derived_arns_are_expanded() -> None:
    assert DERIVED["state_machine_arn"] == {"region", "account_id", "state_machine"}


def test_functions_read_exactly_the_listed_settings() -> None:
    read = fields_read(FUNCTION_SOURCES)
    assert read - set(NOT_ON_AWS) == set(FUNCTION_SETTINGS)


def test_jobs_read_exactly_the_listed_settings() -> None:
    read = fields_read(JOB_SOURCES)
    assert read - set(NOT_ON_AWS) - set(FROM_SPARK_IMAGE) == set(JOB_SETTINGS)


def test_exemptions_are_settings() -> None:
    assert set(NOT_ON_AWS) | set(FROM_SPARK_IMAGE) <= FIELDS


# ----------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()}


def _dockerfile_env(path: Path) -> set[str]:
    text = path.read_text().replace("\\\n", " ")
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            out |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", line))
    return out


@pytest.mark.parametrize("service", COMPOSE_FUNCTIONS)
def test_compose_sets_every_function_variable(compose: dict[str, Any], service: str) -> None:
    assert names(FUNCTION_SETTINGS) <= set(_env(compose["services"][service]))


def test_compose_sets_every_job_variable(compose: dict[str, Any]) -> None:
    runner = set(_env(compose["services"]["spark-runner"]))
    assert names(JOB_SETTINGS) <= runner
    assert names(FROM_SPARK_IMAGE) <= _dockerfile_env(REPO / "spark/Dockerfile")


def test_compose_defaults_are_the_spec_defaults(compose: dict[str, Any]) -> None:
    """Same names locally as on AWS unless the user overrides them (the spec's defaults)."""
    env = _env(compose["services"]["ingest"]) | _env(compose["services"]["spark-runner"])
    defaults = Settings().spec_values()
    checked = 0
    for field in set(FUNCTION_SETTINGS) | set(JOB_SETTINGS):
        m = re.fullmatch(r"\$\{" + env_name(field) + r":-(.*)\}", env.get(env_name(field), ""))
        if m and field in defaults:
            assert m.group(1) == str(defaults[field]), field
            checked += 1
    assert checked >= 7


# ----------------------------------------------------------------------------- template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return build_template(Settings())


def test_template_sets_every_function_variable(template: dict[str, Any]) -> None:
    for f in FUNCTIONS:
        env = template["Resources"][f"{f.logical}Function"]["Properties"]["Environment"]["Variables"]
        assert set(env) == names(FUNCTION_SETTINGS), f.module


def test_template_sets_every_job_variable(template: dict[str, Any]) -> None:
    (container,) = template["Resources"]["SparkJobTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert {e["Name"] for e in container["Environment"]} == names(JOB_SETTINGS)


def test_template_never_points_at_an_emulator(template: dict[str, Any]) -> None:
    assert env_name("aws_endpoint_url") not in json.dumps(template)


def test_template_values_resolve_to_the_deployment(template: dict[str, Any]) -> None:
    values = sample_values(template, {"BucketName": "b-1"})
    env = resolve(template["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"], values)
    assert (env["CARTFLOW_REGION"], env["CARTFLOW_ACCOUNT_ID"], env["CARTFLOW_BUCKET"]) == (
        values["AWS::Region"],
        values["AWS::AccountId"],
        "b-1",
    )
    s = Settings()
    assert env["CARTFLOW_EVENTS_TABLE"] == s.events_table
    assert env["CARTFLOW_STATE_MACHINE"] == template["Resources"]["StateMachine"]["Properties"]["StateMachineName"]


# ----------------------------------------------------------------------------- entry points


def _entrypoint(dockerfile: Path) -> list[str]:
    (line,) = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith("ENTRYPOINT ")]
    return json.loads(line.removeprefix("ENTRYPOINT "))  # type: ignore[no-any-return]


def test_spark_task_runs_the_job_cli_as_the_e2e_test_does(template: dict[str, Any]) -> None:
    """ECS appends the state machine's command to the image's ENTRYPOINT."""
    from spark.jobs.__main__ import parse_args

    values = sample_values(template, {"SubnetIds": ["subnet-a"]})
    definition = json.loads(resolve(template["Resources"]["StateMachine"]["Properties"]["DefinitionString"], values))
    entry = _entrypoint(REPO / "spark/Dockerfile")
    assert entry == ["python", "-m", "spark.jobs"]
    for job in ("Validate", "Transform"):
        run = definition["States"][job]["Branches"][0]["States"][f"{job}RunTask"]
        command = run["Parameters"]["Overrides"]["ContainerOverrides"][0]["Command.$"]
        args = re.fullmatch(r"States\.Array\('(\w+)', '(--batch)', States\.JsonToString\(\$\.\w+\)\)", command)
        assert args, command
        parsed = parse_args([args.group(1), args.group(2), "{}"])
        assert (parsed.job, parsed.batch) == (job.lower(), "{}")


def test_services_image_can_run_the_lambda_entrypoint() -> None:
    """Lambda runs ImageConfig.EntryPoint + Command: the image's own entry script, given a handler."""
    from cartflow.infra.cloudformation import LAMBDA_ENTRYPOINT

    dockerfile = (REPO / "services/Dockerfile").read_text()
    assert _entrypoint(REPO / "services/Dockerfile") == LAMBDA_ENTRYPOINT
    assert f"COPY --from=build /out/lambda-entrypoint.sh {LAMBDA_ENTRYPOINT[0]}" in dockerfile
    assert re.search(r"PATH=/opt/venv/bin:\$PATH", dockerfile)  # `python` is the venv's, with awslambdaric


def test_compose_releases_idle_heap_with_the_session_options(compose: dict[str, Any]) -> None:
    from spark.jobs.session import IDLE_HEAP_OPTIONS

    value = _env(compose["services"]["spark-runner"])["CARTFLOW_SPARK_JAVA_OPTIONS"]
    assert value == f"${{CARTFLOW_SPARK_JAVA_OPTIONS:-{IDLE_HEAP_OPTIONS}}}"
    Settings(spark_java_options=IDLE_HEAP_OPTIONS)  # what the settings accept
