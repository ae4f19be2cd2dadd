"""The distributed engine on AWS: batches above the spec's threshold run on an existing EKS cluster.

The state machine's routing Choices (orchestrator/state_machine.asl.json) send a batch whose
``input_bytes`` exceed ``distributed_min_input_bytes`` (cartflow/core/spec.yaml) to the
``*OnCluster`` job states; on AWS their body is ``eks:runJob.sync`` (orchestrator/job_states.json,
``aws-eks``): a Kubernetes Job whose pod runs the same Spark image as the Fargate task,
``python -m spark.jobs.submit`` -> ``spark-submit --master k8s://... --deploy-mode client``,
executors as pods of the same image. Why EKS and not EMR Serverless: docs/deploy.md.

Everything here comes from the same settings and spec as the rest of the stack, and only when
``Settings.eks_cluster`` names the cluster (otherwise the threshold renders as NEVER_ROUTED):

* ``template_parameters`` / ``template_resources`` / ``trust_pods``: the CloudFormation additions
  (the cluster's endpoint and CA; an EKS Pod Identity association giving the job pods the
  Fargate task's role, iam.py's ``spark-job`` policy, whose trust ``trust_pods`` extends; the
  state machine role's access entry in a Kubernetes group);
* ``state_machine_values``: the render values of the ``aws-eks`` body (deploy-time where needed);
* ``kubernetes_manifest``: the namespace objects a cluster admin applies once
  (``python -m cartflow.infra.distributed --bucket B | kubectl apply -f -``): service account,
  least-privilege RBAC for the driver (executor pods) and for the state machine (jobs), a
  LimitRange, and the job's ConfigMap (its CARTFLOW_* settings and Spark-on-Kubernetes defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cartflow.core.config import Settings
from cartflow.infra.environment import JOB_SETTINGS, environment
from cartflow.infra.intrinsics import GetAtt, Ref
from orchestrator.render import DeployTime

# Names the aws-eks job body refers to (orchestrator/job_states.json).
JOB_CONFIG_MAP = "cartflow-spark-job"
# Kubernetes group of the state machine's role (its EKS access entry); RBAC below.
STATE_MACHINE_GROUP = "cartflow-state-machine"
IN_CLUSTER_MASTER = "k8s://https://kubernetes.default.svc:443"
EXECUTOR_POD_TEMPLATE = "/opt/cartflow/k8s/executor-pod.json"  # spark/k8s/ in the image (spark/Dockerfile)
TASK_ROLE = "SparkJobTaskRole"  # cloudformation.py's Fargate task role


def enabled(settings: Settings) -> bool:
    return bool(settings.eks_cluster)


# --------------------------------------------------------------------------- CloudFormation


def template_parameters(settings: Settings) -> dict[str, Any]:
    """``aws eks describe-cluster --name <cluster>``'s endpoint and CA (eks:runJob needs both)."""
    if not enabled(settings):
        return {}
    return {
        "EksClusterEndpoint": {
            "Type": "String",
            "AllowedPattern": r"^https://\S+$",
            "Description": f"API server endpoint of the EKS cluster {settings.eks_cluster} (public access: eks:runJob needs it)",
        },
        "EksClusterCertificateAuthority": {
            "Type": "String",
            "AllowedPattern": r"^[A-Za-z0-9+/=]+$",
            "Description": "certificateAuthority.data of that cluster (base64)",
        },
    }


def template_resources(settings: Settings) -> dict[str, Any]:
    """The job pods' Pod Identity association (the Fargate task's role: the same job code, the
    same permissions) and the state machine role's access entry in the cluster."""
    if not enabled(settings):
        return {}
    cluster = settings.eks_cluster
    return {
        "SparkPodIdentity": {
            "Type": "AWS::EKS::PodIdentityAssociation",
            "Properties": {
                "ClusterName": cluster,
                "Namespace": settings.eks_namespace,
                "ServiceAccount": settings.eks_service_account,
                "RoleArn": GetAtt(TASK_ROLE, "Arn"),
            },
        },
        # No IAM action is needed for runJob: the role authenticates to the cluster's API,
        # which authorises it by this group's RBAC (kubernetes_manifest), in one namespace.
        "StateMachineAccessEntry": {
            "Type": "AWS::EKS::AccessEntry",
            "Properties": {
                "ClusterName": cluster,
                "PrincipalArn": GetAtt("StateMachineRole", "Arn"),
                "Type": "STANDARD",
                "KubernetesGroups": [STATE_MACHINE_GROUP],
            },
        },
    }


def trust_pods(settings: Settings, resources: dict[str, Any]) -> None:
    """Let EKS Pod Identity assume the Spark task role too (its policy is iam.py's spark-job)."""
    if not enabled(settings):
        return
    trust = resources[TASK_ROLE]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    trust.append(
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            # Pod Identity tags the session with the cluster, namespace and service account.
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": {"aws:SourceAccount": Ref("AWS::AccountId")}},
        }
    )


def state_machine_values(settings: Settings) -> dict[str, Any]:
    """Values of the aws-eks body only the deployment knows (Fn::Sub variables)."""
    if not enabled(settings):
        return {}
    return {
        "eks_endpoint": DeployTime("${EksClusterEndpoint}"),
        "eks_certificate_authority": DeployTime("${EksClusterCertificateAuthority}"),
        "spark_image": DeployTime("${SparkImageUri}"),
    }


# --------------------------------------------------------------------------- Kubernetes


def spark_defaults(settings: Settings, executors: int, executor_cores: int, executor_memory: str) -> dict[str, str]:
    """Spark on Kubernetes settings of the job pod's spark-submit (client mode; the image and
    driver pod come from the job's arguments, they change with every deploy / pod)."""
    return {
        "spark.kubernetes.namespace": settings.eks_namespace,
        # Executors call S3 too: the driver pod's service account, so the same Pod Identity role.
        "spark.kubernetes.authenticate.executor.serviceAccountName": settings.eks_service_account,
        "spark.executor.instances": str(executors),
        "spark.executor.cores": str(executor_cores),
        "spark.executor.memory": executor_memory,
        # The image's ENTRYPOINT is the job CLI: executor pods start spark/k8s/executor.sh instead.
        "spark.kubernetes.executor.podTemplateFile": EXECUTOR_POD_TEMPLATE,
    }


def _rbac(name: str, namespace: str, rules: list[dict[str, Any]], subject: dict[str, str]) -> list[dict[str, Any]]:
    meta = {"name": name, "namespace": namespace}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject],
        },
    ]


def kubernetes_manifest(
    settings: Settings,
    *,
    bucket: str,
    executors: int = 4,
    executor_cores: int = 4,
    executor_memory: str = "12g",
    driver_memory: str = "6g",
) -> dict[str, Any]:
    """A ``v1/List`` of the namespace objects the job needs (``kubectl apply -f``)."""
    ns = settings.eks_namespace
    # The job reads exactly JOB_SETTINGS, as on Fargate; the deployment's bucket and region.
    values = {
        **settings.model_dump(),
        "bucket": bucket,
        "spark_driver_memory": driver_memory,
        # The ceiling the jobs fit their shuffle partitions under: one wave of every executor core.
        "spark_shuffle_partitions": executors * executor_cores,
    }
    env = environment(JOB_SETTINGS, values)
    env["CARTFLOW_SPARK_MASTER"] = IN_CLUSTER_MASTER
    # Spark reads -Dspark.* system properties of the spark-submit JVM as configuration.
    defaults = spark_defaults(settings, executors, executor_cores, executor_memory)
    env["SPARK_SUBMIT_OPTS"] = " ".join(f"-D{k}={v}" for k, v in defaults.items())
    sa = {"kind": "ServiceAccount", "name": settings.eks_service_account, "namespace": ns}
    driver_rules = [
        {
            "apiGroups": [""],
            "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
            "verbs": ["create", "get", "list", "watch", "delete", "deletecollection", "patch"],
        }
    ]
    runjob_rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    group = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": STATE_MACHINE_GROUP}
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": settings.eks_service_account, "namespace": ns}},
        *_rbac("cartflow-spark-driver", ns, driver_rules, sa),
        *_rbac(STATE_MACHINE_GROUP, ns, runjob_rules, group),
        {
            # The job pod sets no requests of its own (the state machine's Job stays small).
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "cartflow-spark-driver", "namespace": ns},
            "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "2", "memory": _pod_memory(driver_memory)}}]},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": JOB_CONFIG_MAP, "namespace": ns}, "data": env},
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _pod_memory(heap: str) -> str:
    """A JVM heap (6g) plus 2 GiB for the rest of the pod, in Kubernetes units (8Gi)."""
    number, unit = int(heap[:-1]), heap[-1].lower()
    mib = number * (1024 if unit == "g" else 1) + 2048
    return f"{mib}Mi"


def main(argv: list[str] | None = None) -> int:
    """``python -m cartflow.infra.distributed --bucket B``: print the Kubernetes manifest as JSON."""
    parser = argparse.ArgumentParser(prog="python -m cartflow.infra.distributed", description=main.__doc__)
    parser.add_argument("--bucket", required=True, help="the stack's data bucket (its BucketName output)")
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--executor-cores", type=int, default=4)
    parser.add_argument("--executor-memory", default="12g")
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args(argv)
    manifest = kubernetes_manifest(
        Settings(),
        bucket=args.bucket,
        executors=args.executors,
        executor_cores=args.executor_cores,
        executor_memory=args.executor_memory,
        driver_memory=args.driver_memory,
    )
    json.dump(manifest, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
