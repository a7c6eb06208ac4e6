"""Great Expectations, imported without the cloud SDKs it would pull in for nothing.

GX imports the AWS, Google Cloud and Azure SDKs at start-up whenever they are installed,
for cloud datasources Evergreen never uses (it hands GX in-memory frames), and NannyML
installs two of them (s3fs, gcsfs). Hiding them from GX's own import saves ~20 MB of
resident memory and 1.5-2 s of start-up in every process that validates. They are hidden
from the importing thread only and only while GX imports: anything else (an `s3://` store
through fsspec, say) imports them as usual, before or after.

`import evergreen.engines.gx` (or `from evergreen.engines.gx import gx`) is the one way the project imports
GX; Python's import lock makes it happen once. Importing changes nothing in GX: what Evergreen
sets in it (`skip_batch_fingerprint`) is done by the code that validates, when it does.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from typing import Any

HIDDEN = ("boto3", "botocore", "google.cloud", "google.api_core", "google.auth", "google.oauth2", "azure")


class _HideFromImporter(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:  # noqa: ANN401
        if threading.get_ident() == self.thread and any(name == h or name.startswith(h + ".") for h in HIDDEN):
            raise ModuleNotFoundError(f"{name} is not imported for great_expectations", name=name)


def _import() -> Any:  # noqa: ANN401
    finder = _HideFromImporter()
    sys.meta_path.insert(0, finder)
    try:
        import great_expectations
        import great_expectations.execution_engine.pandas_execution_engine  # noqa: F401
        import great_expectations.expectations  # noqa: F401
        import great_expectations.validator.v1_validator  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
    return great_expectations


def skip_batch_fingerprint() -> None:
    """Stop GX fingerprinting every batch under 1 GB (`hash_pandas_object` over all rows:
    ~0.4 s per million) only to put the hash in the result's batch markers, which Evergreen
    does not keep. The threshold is a module global of GX's, read on each `get_batch`, so
    this holds for the whole process; the validator calls it when it is built."""
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0


gx = _import()
