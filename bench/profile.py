"""Where Spark's time went, from its event log (``python -m bench --event-log``).

Per job group the bench sets (``bench-validate-<run>``, ``bench-kpis-<run>``): every Spark
job with its call site, wall time, task count, summed task run time and GC time, and the
time covered by no job at all (driver-side work: file checks, planning, Delta log I/O,
Python). ``python -m bench.profile DIR`` prints the same for a kept event-log directory.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _events(path: Path) -> Any:
    with path.open() as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def summarize_event_logs(directory: Path) -> dict[str, Any]:
    """{group: {"jobs": [...], "span_ms": first submit -> last end, "busy_ms": union of job intervals}}."""
    jobs: dict[int, dict[str, Any]] = {}
    stage_job: dict[int, int] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("appstatus")):
        for ev in _events(path):
            kind = ev.get("Event")
            if kind == "SparkListenerJobStart":
                props = ev.get("Properties") or {}
                job = {
                    "id": ev["Job ID"],
                    "group": props.get("spark.jobGroup.id"),
                    "call_site": props.get("callSite.short") or "",
                    # Delta names its internal jobs here ("Compute snapshot for version: N", ...).
                    "description": props.get("spark.job.description") or "",
                    "submitted_ms": ev.get("Submission Time"),
                    "tasks": 0,
                    "task_ms": 0,
                    "gc_ms": 0,
                    "records_read": 0,
                    "shuffle_write_bytes": 0,
                    "stages": [s["Stage ID"] for s in ev.get("Stage Infos", [])],
                }
                jobs[job["id"]] = job
                for sid in job["stages"]:
                    stage_job[sid] = job["id"]
            elif kind == "SparkListenerJobEnd" and ev["Job ID"] in jobs:
                jobs[ev["Job ID"]]["ended_ms"] = ev.get("Completion Time")
            elif kind == "SparkListenerTaskEnd":
                owner = jobs.get(stage_job.get(ev.get("Stage ID"), -1))
                metrics = ev.get("Task Metrics") or {}
                if owner is None:
                    continue
                owner["tasks"] += 1
                owner["task_ms"] += metrics.get("Executor Run Time", 0)
                owner["gc_ms"] += metrics.get("JVM GC Time", 0)
                owner["records_read"] += (metrics.get("Input Metrics") or {}).get("Records Read", 0)
                owner["shuffle_write_bytes"] += (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {"jobs": []})
    for job in sorted(jobs.values(), key=lambda j: j["id"]):
        if job.get("group") and job.get("submitted_ms") and job.get("ended_ms"):
            job["wall_ms"] = job["ended_ms"] - job["submitted_ms"]
            groups[job["group"]]["jobs"].append(job)
    for group in groups.values():
        spans = sorted((j["submitted_ms"], j["ended_ms"]) for j in group["jobs"])
        busy, cur_start, cur_end = 0, None, None
        for start, end in spans:
            if cur_end is None or start > cur_end:
                if cur_end is not None:
                    busy += cur_end - cur_start
                cur_start, cur_end = start, end
            else:
                cur_end = max(cur_end, end)
        if cur_end is not None:
            busy += cur_end - cur_start
        group["busy_ms"] = busy
        group["span_ms"] = spans[-1][1] - spans[0][0] if spans else 0
        group["first_submit_ms"] = spans[0][0] if spans else None
    return dict(groups)


def render_profile(groups: dict[str, Any], top: int = 8, only_timed: bool = True) -> str:
    out = ["  Spark event log (jobs of each timed stage, longest first):"]
    for name, group in sorted(groups.items()):
        if only_timed and "warmup" in name:
            continue
        jobs = group["jobs"]
        task_s = sum(j["task_ms"] for j in jobs) / 1000
        gc_s = sum(j["gc_ms"] for j in jobs) / 1000
        out.append(
            f"  {name}: {len(jobs)} jobs, jobs running {group['busy_ms'] / 1000:.1f} s of a {group['span_ms'] / 1000:.1f} s span, "
            f"task time {task_s:.1f} s (GC {gc_s:.1f} s)"
        )
        for j in sorted(jobs, key=lambda j: -j["wall_ms"])[:top]:
            out.append(
                f"    job {j['id']:>3} {j['wall_ms'] / 1000:>6.1f} s  tasks {j['tasks']:>3}  task {j['task_ms'] / 1000:>6.1f} s  "
                f"GC {j['gc_ms'] / 1000:>5.1f} s  read {j['records_read']:>10,}  shuffle {j['shuffle_write_bytes'] / 1e6:>6.0f} MB  {j['call_site']}"
            )
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render_profile(summarize_event_logs(Path(sys.argv[1])), top=20, only_timed=False))
