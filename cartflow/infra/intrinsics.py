"""CloudFormation intrinsic functions as small typed objects, and the template's JSON from them.

The template renderer (cartflow.infra.cloudformation) builds its resources with ``Ref``,
``GetAtt``, ``Sub``, ``Join``, ``Equals`` and ``Not``; ``to_json`` turns the tree into the
template. Inside a string a deploy-time value is written in Fn::Sub's own syntax:
``str(Ref("BucketName"))`` is ``${BucketName}``, so an f-string builds a Sub template and
``sub()`` picks the form CloudFormation gets. That text is also how deploy-time values pass
through the stdlib-only renderers (the spec, iam.py, orchestrator/render.py), which only
handle strings.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::AccountId",
        "AWS::NotificationARNs",
        "AWS::NoValue",
        "AWS::Partition",
        "AWS::Region",
        "AWS::StackId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }
)
# ${Name}, ${Resource.Attribute}, ${AWS::Region}; ${!Literal} is Fn::Sub's escape for a literal.
_VARIABLE = re.compile(r"\$\{(?!!)([^}]*)\}")
_NAME = re.compile(r"[A-Za-z0-9]+(::[A-Za-z]+|\.[A-Za-z0-9.]+)?")


class Intrinsic(ABC):
    """One intrinsic function call."""

    @abstractmethod
    def json(self) -> dict[str, Any]:
        """Its form in the template."""

    @abstractmethod
    def names(self) -> set[str]:
        """The parameters / resources (logical ids) it refers to."""


@dataclass(frozen=True)
class Ref(Intrinsic):
    """A parameter's value, a pseudo parameter (AWS::Region) or a resource's Ref."""

    name: str

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or "." in self.name:
            raise ValueError(f"not a parameter or logical id: {self.name!r}")

    def json(self) -> dict[str, Any]:
        return {"Ref": self.name}

    def names(self) -> set[str]:
        return {self.name}

    def __str__(self) -> str:
        return "${" + self.name + "}"


@dataclass(frozen=True)
class GetAtt(Intrinsic):
    resource: str
    attribute: str

    def json(self) -> dict[str, Any]:
        return {"Fn::GetAtt": [self.resource, self.attribute]}

    def names(self) -> set[str]:
        return {self.resource}

    def __str__(self) -> str:
        return "${" + f"{self.resource}.{self.attribute}" + "}"


@dataclass(frozen=True)
class Sub(Intrinsic):
    """Fn::Sub of ``template``; ``variables`` are its own (not parameters or resources)."""

    template: str
    variables: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _VARIABLE.findall(self.template):
            if name not in self.variables and not _NAME.fullmatch(name):
                raise ValueError(f"literal '${{' in a Fn::Sub template (write '${{!' for one): {self.template[:120]!r}")

    def json(self) -> dict[str, Any]:
        if not self.variables:
            return {"Fn::Sub": self.template}
        return {"Fn::Sub": [self.template, {k: to_json(v) for k, v in self.variables.items()}]}

    def names(self) -> set[str]:
        found = {n.split(".", 1)[0] if "::" not in n else n for n in _VARIABLE.findall(self.template)}
        return (found - set(self.variables)) | names_in(dict(self.variables))


@dataclass(frozen=True)
class Join(Intrinsic):
    delimiter: str
    values: Any  # a list, or a list-valued intrinsic (Ref of a List<...> parameter)

    def json(self) -> dict[str, Any]:
        return {"Fn::Join": [self.delimiter, to_json(self.values)]}

    def names(self) -> set[str]:
        return names_in(self.values)


@dataclass(frozen=True)
class Equals(Intrinsic):
    left: Any
    right: Any

    def json(self) -> dict[str, Any]:
        return {"Fn::Equals": [to_json(self.left), to_json(self.right)]}

    def names(self) -> set[str]:
        return names_in([self.left, self.right])


@dataclass(frozen=True)
class Not(Intrinsic):
    condition: Intrinsic

    def json(self) -> dict[str, Any]:
        return {"Fn::Not": [self.condition.json()]}

    def names(self) -> set[str]:
        return self.condition.names()


def sub(text: str) -> str | Intrinsic:
    """``text`` as CloudFormation should get it: itself when it holds no deploy-time value, the
    Ref / GetAtt when it is exactly one, else Fn::Sub."""
    if "${" not in text:
        return text
    whole = _VARIABLE.fullmatch(text)
    if whole:
        name = whole.group(1)
        if "." in name and "::" not in name:
            resource, attribute = name.split(".", 1)
            return GetAtt(resource, attribute)
        return Ref(name)
    return Sub(text)


def sub_strings(node: Any) -> Any:
    """``sub`` applied to every string of a JSON-like document (a policy built as text)."""
    if isinstance(node, str):
        return sub(node)
    if isinstance(node, Mapping):
        return {k: sub_strings(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [sub_strings(v) for v in node]
    return node


def to_json(node: Any) -> Any:
    """The template JSON of a tree of dicts, lists, scalars and intrinsics."""
    if isinstance(node, Intrinsic):
        return node.json()
    if isinstance(node, Mapping):
        return {str(k): to_json(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_json(v) for v in node]
    if isinstance(node, str) and _VARIABLE.search(node):
        # CloudFormation would take it literally: a sub() was forgotten.
        raise ValueError(f"deploy-time value outside Fn::Sub: {node[:120]!r}")
    return node


def names_in(node: Any) -> set[str]:
    """Every parameter / logical id the intrinsics in ``node`` refer to."""
    if isinstance(node, Intrinsic):
        return node.names()
    if isinstance(node, Mapping):
        return set().union(*(names_in(v) for v in node.values()))
    if isinstance(node, (list, tuple)):
        return set().union(*(names_in(v) for v in node))
    return set()


def check_names(parameters: Mapping[str, Any], resources: Mapping[str, Any], node: Any) -> None:
    """Raise unless every name ``node`` refers to is a parameter, a resource or a pseudo parameter."""
    unknown = names_in(node) - set(parameters) - set(resources) - PSEUDO_PARAMETERS
    if unknown:
        raise ValueError(f"references to nothing in the template: {sorted(unknown)}")
