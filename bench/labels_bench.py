"""How the retrain's label-file check grows with the number of files:
`python -m bench labels [--files 30,90] [--rows 100000]`.

For each file count F it writes F daily batches of `rows` rows and one labels file per day
(ids unique, all served), then times `evergreen.loop.sources.check_label_files` once, as
the retrain runs it before every training. Linear means: 3x the files, about 3x the time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def write_history(root: str, files: int, rows: int, seed: int = 0):  # noqa: ANN201 - ModelConfig
    """`files` daily batches of `rows` rows (id, timestamp, x) and a labels file per day."""
    import numpy as np
    import pandas as pd

    from evergreen.adapters import io
    from evergreen.config import parse_config

    cfg = parse_config(
        {
            "name": "labels-bench",
            "columns": {"target": "y", "features": ["x"]},
            "data": {"root": root},
            "mlflow": {"model_name": "labels-bench", "tracking_uri": f"sqlite:///{root}/mlflow.db",
                       "artifact_root": f"{root}/artifacts"},
        }
    )
    rng = np.random.default_rng(seed)
    for i in range(files):
        day = (pd.Timestamp("2024-01-01") + pd.Timedelta(days=i)).strftime("%Y-%m-%d")
        ids = np.arange(i * rows, (i + 1) * rows)
        batch = pd.DataFrame({"id": ids, "timestamp": pd.Timestamp(day), "x": rng.normal(size=rows)})
        io.write_table(batch, f"{cfg.data.path('batches')}/{day}.parquet")
        io.write_table(pd.DataFrame({"id": ids, "y": rng.integers(0, 2, rows)}), f"{cfg.data.path('labels')}/{day}.parquet")
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench labels", description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="30,90", help="file counts, comma-separated")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per daily file")
    args = parser.parse_args(argv)
    from evergreen.loop.sources import check_label_files

    for files in [int(f) for f in args.files.split(",")]:
        with tempfile.TemporaryDirectory(prefix="evergreen-labels-") as root:
            cfg = write_history(str(Path(root)), files, args.rows)
            started = time.perf_counter()
            reports = check_label_files(cfg)
            seconds = time.perf_counter() - started
            passed = sum(r.success for r in reports)
            print(f"{files} files x {args.rows:,} rows: check_label_files {seconds:.2f} s ({passed}/{len(reports)} pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
