"""Column names Evergreen adds to a model's own (the config names those): the serving
columns of the prediction log, a contract between the scoring service, the prediction
log, the monitor and the canary review."""

from __future__ import annotations

ALIAS_COLUMN = "alias"
"""The alias (champion/canary) that served the row."""
SERVED_AT_COLUMN = "served_at"
"""The request time."""
REQUEST_ID_COLUMN = "request_id"
# Columns only the log has; a monitor batch is the log without them.
LOG_ONLY_COLUMNS = (ALIAS_COLUMN, SERVED_AT_COLUMN, REQUEST_ID_COLUMN)
