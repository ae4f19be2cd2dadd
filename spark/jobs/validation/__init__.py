"""The VALIDATION job: raw CSVs of one batch -> Delta ``validated/`` + ``quarantine/`` tables.

Flow (few Spark actions: one aggregation for the result, then two Delta writes per dataset):
1. File checks without Spark (filecheck.py streams each file once): a file that is not a
   CSV of its dataset (encoding, BOM, binary, compressed, delimiter, header, no data,
   truncated) or repeats an accepted file byte for byte is REJECTED with one reason; the
   rest of the batch goes on.
2. Each accepted file is read with an all-string schema built from its own header
   (PERMISSIVE, with a corrupt-record column), so column order may differ between files.
3. Per row, every rule violation becomes an error {rule, column, value, message}; the rule
   wording comes from rules.py, shared with the plain-Python ``cartflow contracts check``.
4. One aggregation counts rows per file, split and rule. If the quarantined share is above
   ``max_quarantined_share`` the batch FAILS and nothing is written; otherwise valid rows go
   typed to ``validated/<dataset>``, the others raw to ``quarantine/<dataset>`` (with source
   file, line number and errors), both with replaceWhere on batch_id so a replay replaces
   only this batch's rows, and the file outcomes to ``file_registry/``.

Modules by step: files (1), reading (2), rows and references (3), counts (4), output and
lines (the writes), job (the whole flow); the Delta helpers shared with the transformation
are in spark/jobs/delta_io.py.
"""

from spark.jobs.validation.files import MISSING_FILE, SourceFile, Structure, archive_plan, decide_files
from spark.jobs.validation.job import run_validation

__all__ = ["MISSING_FILE", "SourceFile", "Structure", "archive_plan", "decide_files", "run_validation"]
