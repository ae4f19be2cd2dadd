"""Names of the columns the validation steps add and pass on; shared by every step."""

from __future__ import annotations

# Column names the job adds; contract columns are lower_snake_case without a leading "_".
BATCH_ID = "batch_id"
PROCESSING_DATE = "processing_date"
SOURCE_FILE = "source_file"
RAW_RECORD = "raw_record"  # the unparsed line of a malformed row
ERRORS = "errors"  # array<struct<rule, column, value>> in quarantine/
REASONS = "reasons"  # the errors' messages
REASON = "reason"  # the messages joined with "; "
LINE_NUMBER = "line_number"  # physical line where the row starts (header = 1)
RECORD_NUMBER = "record_number"  # 1-based data record of the file
# Helper columns (leading _) live only inside the job; none reaches an output table.
_CORRUPT = "_corrupt_record"
_RAW = "_raw"  # struct of the raw (string) contract columns while checking
_PID = "_split"
_POS = "_pos"
