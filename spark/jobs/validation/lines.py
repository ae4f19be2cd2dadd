"""Line numbers of quarantined rows: from (split, position in split) to the physical line of the file."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column as SparkColumn
from pyspark.sql import functions as F

from spark.jobs.validation.columns import _PID, _POS, SOURCE_FILE


@dataclass(frozen=True)
class LineNumbers:
    """Turns (split, position in split) into a record index and a physical line of the file.

    ``offsets``: records before each split of each file, from the counts of the summary job
    (no extra Spark action). ``shifts``: per file, filecheck's (record index, line - index - 2)
    change points for blank lines and multi-line records; None when too many to track.
    """

    offsets: dict[tuple[str, int], int]
    shifts: dict[str, tuple[tuple[int, int], ...] | None]

    def record_index(self) -> SparkColumn:
        keys = F.concat(F.col(SOURCE_FILE), F.lit("#"), F.col(_PID).cast("string"))
        pairs = [x for (uri, pid), offset in sorted(self.offsets.items()) for x in (F.lit(f"{uri}#{pid}"), F.lit(offset))]
        offset = F.try_element_at(F.create_map(*pairs), keys) if pairs else F.lit(0)
        # monotonically_increasing_id = split index << 33 | position within the split.
        return F.col(_POS) - F.shiftleft(F.col(_PID).cast("long"), 33) + F.coalesce(offset, F.lit(0))

    def line_number(self, record: SparkColumn) -> SparkColumn:
        line = record + 2  # the header is line 1
        expr: SparkColumn | None = None
        for uri, shifts in self.shifts.items():
            if shifts == ():
                continue
            if shifts is None:
                file_line = F.lit(None).cast("long")
            else:
                points = F.array(*[F.struct(F.lit(r).alias("r"), F.lit(d).alias("d")) for r, d in shifts])
                last = F.try_element_at(F.filter(points, lambda p: p["r"] <= record), F.lit(-1))
                file_line = line + F.coalesce(last["d"], F.lit(0))
            condition = F.col(SOURCE_FILE) == uri
            expr = F.when(condition, file_line) if expr is None else expr.when(condition, file_line)
        return line if expr is None else expr.otherwise(line)
