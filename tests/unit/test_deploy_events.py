"""`cartflow deploy` streams the CloudFormation stack events while it waits (new ones only, oldest first)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cartflow.infra.ship import StackEvents, event_line


def ev(n: int, status: str = "CREATE_IN_PROGRESS", reason: str | None = None) -> dict[str, Any]:
    e = {
        "EventId": f"e{n}",
        "Timestamp": datetime(2026, 1, 1, 12, 0, n, tzinfo=UTC),
        "ResourceStatus": status,
        "ResourceType": "AWS::S3::Bucket",
        "LogicalResourceId": f"R{n}",
    }
    return e | ({"ResourceStatusReason": reason} if reason else {})


class FakeCfn:
    """describe_stack_events as CloudFormation pages it: newest first, two per page."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def describe_stack_events(self, StackName: str, NextToken: str | None = None) -> dict[str, Any]:
        newest_first = list(reversed(self.events))
        start = int(NextToken or 0)
        page = newest_first[start : start + 2]
        more = start + 2 < len(newest_first)
        return {"StackEvents": page, **({"NextToken": str(start + 2)} if more else {})}


def test_only_events_after_the_start_are_printed_in_order() -> None:
    cfn = FakeCfn()
    cfn.events = [ev(1), ev(2)]  # the stack's history before this deploy
    stream = StackEvents(cfn, "s")
    assert stream.new() == []
    cfn.events += [ev(3), ev(4), ev(5, "CREATE_FAILED", "bucket exists")]
    assert [e["EventId"] for e in stream.new()] == ["e3", "e4", "e5"]  # across pages, oldest first
    assert stream.new() == []
    cfn.events.append(ev(6, "CREATE_COMPLETE"))
    assert [e["EventId"] for e in stream.new()] == ["e6"]


def test_event_line() -> None:
    assert event_line(ev(5, "CREATE_FAILED", "bucket exists")) == "12:00:05 CREATE_FAILED AWS::S3::Bucket R5: bucket exists"
    assert event_line(ev(3)) == "12:00:03 CREATE_IN_PROGRESS AWS::S3::Bucket R3"
