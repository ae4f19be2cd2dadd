"""CloudWatch alarms of the AWS stack, each wired to the failure topic (the batch-failure notices').

An operator subscribed to the failure topic hears of everything that needs a human: a failed
batch (the state machine's own notice), and, from these alarms, what fails outside a batch's
Catch: an execution that failed or timed out, a function that raised, a message parked in a
dead-letter queue. Every alarm fires on the first occurrence (one 5-minute period, sum or
maximum >= 1) and treats missing data as fine: no traffic is no failure.

Templates only: the local stack has no CloudWatch metrics to alarm on (`cartflow audit` and
`cartflow batches list --status failed` are its equivalents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cartflow.infra.intrinsics import GetAtt, Ref

PERIOD_SECONDS = 300


@dataclass(frozen=True)
class Watched:
    """One metric to alarm on: ``namespace/metric`` of one resource (its dimension)."""

    logical: str  # the alarm's logical id is <logical>Alarm
    what: str  # for the alarm description
    namespace: str
    metric: str
    dimension: str
    value: Any  # the dimension's value (an intrinsic)
    statistic: str = "Sum"


def alarm(w: Watched, topic: str) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": f"cartflow: {w.what}. What to do: docs/deploy.md, Alarms.",
            "Namespace": w.namespace,
            "MetricName": w.metric,
            "Dimensions": [{"Name": w.dimension, "Value": w.value}],
            "Statistic": w.statistic,
            "Period": PERIOD_SECONDS,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [Ref(topic)],
        },
    }


def watched(functions: dict[str, str], queues: dict[str, str], state_machine: str) -> list[Watched]:
    """``functions``: Lambda logical id -> module; ``queues``: dead-letter queue logical id -> what a message there means."""
    out = [
        Watched(
            f"{state_machine}ExecutionsFailed",
            "a batch execution failed (outside its own failure path, or after it)",
            "AWS/States",
            "ExecutionsFailed",
            "StateMachineArn",
            Ref(state_machine),
        ),
        Watched(
            f"{state_machine}ExecutionsTimedOut",
            "a batch execution timed out",
            "AWS/States",
            "ExecutionsTimedOut",
            "StateMachineArn",
            Ref(state_machine),
        ),
    ]
    out += [
        Watched(f"{logical}Errors", f"the {module} function raised", "AWS/Lambda", "Errors", "FunctionName", Ref(logical))
        for logical, module in functions.items()
    ]
    out += [
        Watched(
            f"{logical}Depth",
            what,
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            GetAtt(logical, "QueueName"),
            statistic="Maximum",
        )
        for logical, what in queues.items()
    ]
    return out


def alarms(functions: dict[str, str], queues: dict[str, str], state_machine: str, topic: str) -> dict[str, Any]:
    """The alarm resources, keyed by logical id."""
    return {f"{w.logical}Alarm": alarm(w, topic) for w in watched(functions, queues, state_machine)}
