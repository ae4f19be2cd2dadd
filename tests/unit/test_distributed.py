"""The distributed engine (issue 18): routing by input bytes, the EKS job body, its template
resources and Kubernetes wiring, the spark-submit launcher and the multi-writer LogStore setting.

The EKS side cannot run here (no cluster, MiniStack provisions no AWS::EKS::AccessEntry): it is
checked offline (cfn-lint, the ASL schema, orchestrator/lint.py) and against the launcher the
e2e test runs (tests/e2e/test_spark_image_job.py).
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from cartflow.core.batch_table import Chunk
from cartflow.core.config import Settings
from cartflow.infra import distributed, iam
from cartflow.infra.cloudformation import MAX_TEMPLATE_BYTES, build_template, template_body, template_values
from cartflow.infra.environment import JOB_SETTINGS, env_name
from orchestrator.lint import problems
from orchestrator.render import NEVER_ROUTED, build_definition, params_from_settings, state_machine_params
from services.dispatch import batch_input
from spark.jobs import submit
from spark.jobs.session import LOG_STORE_CLASS, delta_log_store_conf, locked_jar_names, spark_conf
from tests.cfn_resolve import resolve, sample_values

BASE = Settings(ecs_subnets=["subnet-a"], ecs_security_groups=["sg-1"])
EKS = BASE.model_copy(update={"eks_cluster": "analytics"})
JOB_STATES = ("Validate", "Transform", "ValidateOnCluster", "TransformOnCluster")
ROUTES = ("RouteValidate", "RouteTransform")


def rendered(target: str, settings: Settings = EKS, **extra: Any) -> dict[str, Any]:
    params = params_from_settings(settings, target)  # type: ignore[arg-type]
    return build_definition(target, {**params, **extra})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- routing


def test_the_spec_threshold_routes_only_where_an_engine_is_configured() -> None:
    assert params_from_settings(EKS, "aws")["distributed_min_input_bytes"] == EKS.distributed_min_input_bytes
    for target in ("local", "aws"):  # no engine: the renderer's default, NEVER_ROUTED
        assert "distributed_min_input_bytes" not in params_from_settings(BASE, target)  # type: ignore[arg-type]
    assert NEVER_ROUTED > 10**15  # more bytes than any batch of 50 files
    route = rendered("aws")["States"]["RouteTransform"]
    assert route["Type"] == "Choice" and route["Default"] == "Transform"
    (rule,) = route["Choices"]
    assert rule["Next"] == "TransformOnCluster"
    assert rule["And"] == [
        {"Variable": "$.input_bytes", "IsPresent": True},
        {"Variable": "$.input_bytes", "NumericGreaterThan": EKS.distributed_min_input_bytes},
    ]


def test_without_an_engine_the_cluster_states_are_not_rendered() -> None:
    for target in ("local", "aws"):
        states = rendered(target, BASE)["States"]
        assert not [n for n in states if n.endswith("OnCluster")]
        assert states["RouteValidate"]["Type"] == states["RouteTransform"]["Type"] == "Pass"
        assert (states["RouteValidate"]["Next"], states["RouteTransform"]["Next"]) == ("Validate", "Transform")


def test_with_an_engine_the_renderings_differ_only_in_the_job_states() -> None:
    threshold = {"distributed_min_input_bytes": 1000}
    local, aws = rendered("local", **threshold), rendered("aws", **threshold)
    for definition in (local, aws):
        assert definition["States"]["RouteValidate"]["Choices"][0]["Next"] == "ValidateOnCluster"
        for name in JOB_STATES:
            definition["States"].pop(name)
    assert local == aws
    # Locally the one Activity worker serves both routes (it already runs on the compose cluster).
    states = rendered("local", **threshold)["States"]
    assert states["ValidateOnCluster"]["Resource"] == states["Validate"]["Resource"]
    for job in ("Validate", "Transform"):
        cluster = {k: v for k, v in states[f"{job}OnCluster"].items() if k != "Comment"}
        assert cluster == {k: v for k, v in states[job].items() if k != "Comment"}


@pytest.mark.parametrize("target", ["local", "aws"])
def test_graph_checks_pass_with_and_without_an_engine(target: str) -> None:
    assert problems(rendered(target)) == []
    assert problems(rendered(target, BASE)) == []


def test_dispatch_passes_the_chunks_input_bytes_to_the_execution() -> None:
    chunk = Chunk(
        group_key="2026-12-01",
        batch_id="b0000000000001-2026-12-01-000",
        status="pending",
        created_at=1,
        file_paths=["s3://cartflow-data/raw/order_lines/a.csv"],
        input_bytes=734_003_200,
    )
    batch = batch_input(chunk, "2026-12-01")
    assert batch.input_bytes == 734_003_200
    assert json.loads(batch.model_dump_json())["input_bytes"] == 734_003_200
    assert Chunk.from_item({**_item(chunk), "input_bytes": {"N": "12"}}).input_bytes == 12
    assert Chunk.from_item(_item(chunk)).input_bytes == 0  # a chunk from before sizes were kept: Fargate


def _item(chunk: Chunk) -> dict[str, Any]:
    from cartflow.core.deps import to_ddb

    return to_ddb(
        {
            "group_key": chunk.group_key,
            "batch_id": chunk.batch_id,
            "status": chunk.status,
            "created_at": 1,
            "file_paths": chunk.file_paths,
        }
    )


# ----------------------------------------------------------------------------- the EKS job body


def _run_job(definition: dict[str, Any], job: str) -> dict[str, Any]:
    state = definition["States"][f"{job}OnCluster"]
    assert state["Type"] == "Parallel" and state["OutputPath"] == "$[0]"
    return state["Branches"][0]["States"][f"{job}OnClusterRunJob"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("job", ["Validate", "Transform"])
def test_the_eks_job_runs_the_launcher_with_the_batch_and_reads_the_same_result(job: str) -> None:
    definition = rendered("aws")
    run = _run_job(definition, job)
    assert run["Resource"] == "arn:aws:states:::eks:runJob.sync"
    params = run["Parameters"]
    assert (params["ClusterName"], params["Namespace"]) == ("analytics", EKS.eks_namespace)
    spec = params["Job"]["spec"]
    assert spec["backoffLimit"] == 0  # Step Functions' Retry is the one retry policy
    assert spec["activeDeadlineSeconds"] == run["TimeoutSeconds"]  # a timed-out attempt is gone before its retry
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == EKS.eks_service_account
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "spark.jobs.submit"]
    assert container["envFrom"] == [{"configMapRef": {"name": distributed.JOB_CONFIG_MAP}}]
    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]} == {
        "POD_NAME": "metadata.name",
        "POD_IP": "status.podIP",
    }
    # The arguments are what the launcher parses (the batch: the whole state).
    args = container["args.$"]
    assert args.startswith("States.Array(") and args.endswith(", '--batch', States.JsonToString($))")
    literal = shlex.split(args.removeprefix("States.Array(").rsplit(", '--batch'", 1)[0].replace(",", " "))
    assert literal[0] == job.lower()
    confs = dict(submit._conf_pair(v) for k, v in zip(literal[1::2], literal[2::2], strict=True) if k == "--conf")
    assert confs == {
        "spark.kubernetes.container.image": container["image"],
        "spark.kubernetes.driver.pod.name": "$(POD_NAME)",
        "spark.driver.host": "$(POD_IP)",
    }
    # The same result document as the Fargate route.
    fargate = definition["States"][job]["Branches"][0]["States"][f"{job}ReadResult"]["Parameters"]
    read = definition["States"][f"{job}OnCluster"]["Branches"][0]["States"][f"{job}OnClusterReadResult"]["Parameters"]
    assert read == fargate


# ----------------------------------------------------------------------------- the template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return build_template(EKS)


def test_eks_template_is_lint_clean_and_fits_inline(template: dict[str, Any]) -> None:
    from cfnlint.api import lint

    matches = lint(json.dumps(template, indent=1), regions=["us-east-1", "eu-west-1"])
    assert [f"{m.rule.id} {m.message}" for m in matches] == []
    assert len(template_body(template).encode()) <= MAX_TEMPLATE_BYTES  # uploaded by `cartflow deploy`


def test_deployed_definition_passes_the_asl_schema_and_graph_checks(template: dict[str, Any]) -> None:
    from tests.unit.test_state_machine_lint import cfn_lint

    values = sample_values(
        template,
        {"SubnetIds": ["subnet-a"], "EksClusterEndpoint": "https://abc.eks.example", "EksClusterCertificateAuthority": "Q0E="},
    )
    deployed = json.loads(resolve(template["Resources"]["StateMachine"]["Properties"]["DefinitionString"], values))
    assert cfn_lint(deployed) == [] and problems(deployed) == []
    run = _run_job(deployed, "Validate")["Parameters"]
    assert (run["Endpoint"], run["CertificateAuthority"]) == ("https://abc.eks.example", "Q0E=")
    assert run["Job"]["spec"]["template"]["spec"]["containers"][0]["image"] == values["SparkImageUri"]


def test_eks_wiring_reuses_the_task_role_and_scopes_the_state_machine_to_a_group(template: dict[str, Any]) -> None:
    res = template["Resources"]
    identity = res["SparkPodIdentity"]["Properties"]
    assert identity == {
        "ClusterName": "analytics",
        "Namespace": EKS.eks_namespace,
        "ServiceAccount": EKS.eks_service_account,
        "RoleArn": {"Fn::GetAtt": ["SparkJobTaskRole", "Arn"]},
    }
    trust = res["SparkJobTaskRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"]["Service"] for s in trust] == ["ecs-tasks.amazonaws.com", "pods.eks.amazonaws.com"]
    assert trust[1]["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    entry = res["StateMachineAccessEntry"]["Properties"]
    assert entry["PrincipalArn"] == {"Fn::GetAtt": ["StateMachineRole", "Arn"]}
    assert entry["KubernetesGroups"] == [distributed.STATE_MACHINE_GROUP] and "AccessPolicies" not in entry
    # The state machine role gains no AWS permission for runJob (the cluster's RBAC authorises it).
    plain = build_template(BASE)["Resources"]["StateMachineRole"]["Properties"]["Policies"]
    assert res["StateMachineRole"]["Properties"]["Policies"] == plain


def test_default_template_has_no_eks_resources() -> None:
    template = build_template(BASE)
    assert not [r for r in template["Resources"].values() if r["Type"].startswith("AWS::EKS::")]
    assert not [p for p in template["Parameters"] if p.startswith("Eks")]


def test_kubernetes_manifest_configures_the_job_as_on_fargate() -> None:
    manifest = distributed.kubernetes_manifest(EKS, bucket="cartflow-data-1-eu-west-1", executors=3, executor_cores=2)
    kinds = {(i["kind"], i["metadata"]["name"]): i for i in manifest["items"]}
    env = kinds[("ConfigMap", distributed.JOB_CONFIG_MAP)]["data"]
    assert {k for k in env if k.startswith("CARTFLOW_")} == {env_name(f) for f in JOB_SETTINGS} | {"CARTFLOW_SPARK_MASTER"}
    assert env["CARTFLOW_SPARK_MASTER"].startswith("k8s://https://kubernetes.default.svc")
    assert env["CARTFLOW_BUCKET"] == "cartflow-data-1-eu-west-1"
    assert env["CARTFLOW_SPARK_SHUFFLE_PARTITIONS"] == "6"
    opts = dict(o.removeprefix("-D").split("=", 1) for o in env["SPARK_SUBMIT_OPTS"].split())
    assert opts["spark.executor.instances"] == "3" and opts["spark.kubernetes.namespace"] == EKS.eks_namespace
    assert opts["spark.kubernetes.authenticate.executor.serviceAccountName"] == EKS.eks_service_account
    assert ("ServiceAccount", EKS.eks_service_account) in kinds
    # The state machine's group may run jobs and read their pods, nothing else.
    role = kinds[("Role", distributed.STATE_MACHINE_GROUP)]
    assert {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]} == {
        "jobs": {"create", "get", "list", "watch", "delete"},
        "pods": {"get", "list", "watch"},
        "pods/log": {"get"},
    }
    binding = kinds[("RoleBinding", distributed.STATE_MACHINE_GROUP)]
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": distributed.STATE_MACHINE_GROUP}
    ]
    limits = kinds[("LimitRange", "cartflow-spark-driver")]["spec"]["limits"][0]["defaultRequest"]
    assert limits["memory"] == "8192Mi"  # the 6g heap plus 2 GiB


# ----------------------------------------------------------------------------- the launcher


@pytest.fixture
def jars_dir(tmp_path: Path) -> Path:
    for name in locked_jar_names():
        (tmp_path / name).write_bytes(b"")
    return tmp_path


BATCH = json.dumps({"batch_id": "b1", "group_key": "g", "bucket": "cartflow-data", "processing_date": "2026-12-01"})


def test_launcher_execs_spark_submit_in_client_mode_with_the_session_settings(jars_dir: Path) -> None:
    settings = Settings(jars_dir=jars_dir, spark_master="spark://master:7077", spark_driver_memory="3g")
    argv = submit.submit_command(settings, ["validate", "--batch", BATCH], {"spark.driver.host": "10.0.0.7"})
    assert argv[:5] == ["spark-submit", "--master", "spark://master:7077", "--deploy-mode", "client"]
    assert argv[argv.index("--driver-memory") + 1] == "3g"
    assert argv[argv.index("--jars") + 1].split(",") == [str(jars_dir / n) for n in locked_jar_names()]
    confs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
    expected = {k: v for k, v in spark_conf(settings, []).items() if k not in ("spark.jars", "spark.driver.memory")}
    assert confs == {**expected, "spark.driver.host": "10.0.0.7"}
    assert not [k for k in confs if "secret" in k or "access.key" in k]
    assert argv[-4:] == [str(submit.ENTRY), "validate", "--batch", BATCH]
    assert submit.ENTRY.is_file()


def test_launcher_refuses_bad_input_before_starting_anything(jars_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTFLOW_JARS_DIR", str(jars_dir))
    calls: list[list[str]] = []
    assert submit.main(["validate", "--batch", "{not json"], exec_=lambda f, a: calls.append(a)) == 2
    assert submit.main(["validate", "--conf", "nospark=1", "--batch", BATCH], exec_=lambda f, a: calls.append(a)) == 2
    assert calls == []
    assert (
        submit.main(["transform", "--conf", "spark.driver.host=$(POD_IP)", "--batch", BATCH], exec_=lambda f, a: calls.append(a))
        == 0
    )
    (argv,) = calls
    assert "spark.driver.host=$(POD_IP)" in argv and argv[-3:] == ["transform", "--batch", BATCH]


# ----------------------------------------------------------------------------- multi-writer LogStore


def test_multi_writer_log_store_needs_its_jar_and_its_table(tmp_path: Path) -> None:
    settings = Settings(delta_multi_writer=True, region="eu-west-1")
    with pytest.raises(RuntimeError, match="delta-storage-s3-dynamodb"):
        spark_conf(settings, [tmp_path / "delta-spark_4.2_2.13-4.4.0.jar"])
    conf = delta_log_store_conf(settings, [tmp_path / "delta-storage-s3-dynamodb-4.4.0.jar"])
    assert conf == {
        "spark.delta.logStore.s3a.impl": LOG_STORE_CLASS,
        "spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName": settings.delta_log_table,
        "spark.io.delta.storage.S3DynamoDBLogStore.ddb.region": "eu-west-1",
    }
    assert "spark.delta.logStore.s3a.impl" not in spark_conf(Settings(), [])


def test_log_store_table_is_the_spec_and_granted_only_when_on() -> None:
    values = template_values(Settings())
    table = next(
        t
        for t in copy.deepcopy(build_template(Settings()))["Resources"].values()
        if t["Properties"].get("TableName") == Settings().delta_log_table
    )
    assert [k["AttributeName"] for k in table["Properties"]["KeySchema"]] == ["tablePath", "fileName"]
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expireTime", "Enabled": True}

    def sids(multi: bool) -> dict[str, Any]:
        doc = iam.policies({**values, "delta_multi_writer": multi})["spark-job"]
        return {s["Sid"]: s for s in doc["Statement"]}

    assert "DeltaLogStore" not in sids(False)
    grant = sids(True)["DeltaLogStore"]
    assert grant["Action"] == ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"]
    assert grant["Resource"] == [f"arn:aws:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/{Settings().delta_log_table}"]


def test_aws_params_reject_a_bad_threshold() -> None:
    from orchestrator.render import RenderError

    with pytest.raises(RenderError, match="distributed_min_input_bytes"):
        build_definition(
            "aws", {**state_machine_params("aws", {**BASE.spec_values(), **BASE.model_dump()}), "distributed_min_input_bytes": -1}
        )


def test_executor_pods_start_the_jvm_backend_not_the_job_cli() -> None:
    """Spark starts executor pods with the argument "executor"; the image's ENTRYPOINT is the job
    CLI, so the pod template (baked into the image) points them at spark/k8s/executor.sh."""
    repo = Path(__file__).resolve().parents[2]
    image_dir = Path(distributed.EXECUTOR_POD_TEMPLATE).parent
    assert f"COPY spark/k8s {image_dir}" in (repo / "spark/Dockerfile").read_text()
    template = json.loads((repo / "spark/k8s" / Path(distributed.EXECUTOR_POD_TEMPLATE).name).read_text())
    (container,) = template["spec"]["containers"]
    assert container["command"] == [str(image_dir / "executor.sh")]
    script = repo / "spark/k8s/executor.sh"
    assert script.stat().st_mode & 0o111
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in script.read_text()
    opts = distributed.spark_defaults(EKS, 2, 2, "4g")
    assert opts["spark.kubernetes.executor.podTemplateFile"] == distributed.EXECUTOR_POD_TEMPLATE
