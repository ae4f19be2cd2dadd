"""Evaluate the intrinsic functions the generated template uses, with made-up deploy-time values.

Lets the unit tests compare what CloudFormation will *produce* (a policy's ARNs, the state
machine definition after Fn::Sub) with cartflow's own renderings, without AWS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REGION, ACCOUNT = "eu-west-1", "123456789012"
_VAR = re.compile(r"\$\{([A-Za-z0-9:.]+)\}")


def sample_values(template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Ref/GetAtt values: parameters (given or default), pseudo parameters, fake resource ids."""
    values: dict[str, Any] = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
    for name, p in template["Parameters"].items():
        values[name] = (parameters or {}).get(name, p.get("Default", f"<{name}>"))
    for logical, res in template["Resources"].items():
        kind = res["Type"]
        props = res.get("Properties", {})
        if kind == "AWS::SNS::Topic":
            values[logical] = f"arn:aws:sns:{REGION}:{ACCOUNT}:{props['TopicName']}"
        elif kind == "AWS::IAM::Role":
            values[logical] = f"role-{logical}"
            values[f"{logical}.Arn"] = f"arn:aws:iam::{ACCOUNT}:role/role-{logical}"
        elif kind == "AWS::SQS::Queue":
            values[f"{logical}.Arn"] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{props['QueueName']}"
            values[f"{logical}.QueueName"] = props["QueueName"]
        elif kind == "AWS::Lambda::Function":
            values[logical] = props["FunctionName"]
            values[f"{logical}.Arn"] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{props['FunctionName']}"
        elif kind == "AWS::Logs::LogGroup":
            values[logical] = props["LogGroupName"]
            values[f"{logical}.Arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{props['LogGroupName']}:*"
        elif kind == "AWS::DynamoDB::Table":
            values[f"{logical}.StreamArn"] = (
                f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{props['TableName']}/stream/2026-01-01T00:00:00.000"
            )
        elif kind == "AWS::EC2::SecurityGroup":
            values[f"{logical}.GroupId"] = "sg-0123456789abcdef0"
        else:
            values.setdefault(logical, f"<{logical}>")
    return values


def resolve(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, list):
        return [resolve(v, values) for v in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return values[node["Ref"]]
    if set(node) == {"Fn::GetAtt"}:
        return values[".".join(node["Fn::GetAtt"])]
    if set(node) == {"Fn::Join"}:
        sep, items = node["Fn::Join"]
        return sep.join(str(x) for x in _flat(resolve(items, values)))
    if set(node) == {"Fn::Sub"}:
        arg = node["Fn::Sub"]
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], values))
        scope = {**values, **local}
        return _VAR.sub(lambda m: str(_join(scope[m.group(1)])), text)
    return {k: resolve(v, values) for k, v in node.items()}


def _flat(items: Any) -> list[Any]:
    if isinstance(items, list):
        return [x for item in items for x in _flat(item)]
    return [items]


def _join(value: Any) -> Any:
    return ",".join(value) if isinstance(value, list) else value
