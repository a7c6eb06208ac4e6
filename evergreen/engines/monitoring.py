"""Drift and performance monitoring with NannyML.

`fit_monitor` fits the NannyML calculators once on the monitor reference (labelled, with the
serving model's predictions); `compute_monitor` runs them on one production batch and returns
a `MonitorReport` of plain values; `evergreen.decisions.alerts.decide_alerts` turns a report
and the config's thresholds into an `AlertDecision` and the payloads of the drift/performance
events.

Chunking: thresholds are calibrated on reference chunks of `monitoring.chunk_size` rows, or of
the expected batch size (`data.rows_per_batch`) when that is None; at compute time a batch is
one chunk (chunk_size None) or chunks of chunk_size rows. When a batch has several chunks,
the batch-level figures are those of its latest chunk (the freshest data), and every chunk is
listed in `MonitorReport.chunks`.

Multiclass: NannyML's multiclass CBPE and realized performance, with `y_pred_proba` the
config's class -> column mapping. The class labels of predictions and targets are handed
to NannyML as text (`config.class_key`), so integer classes, text classes and YAML's integer
keys all meet; the config's macro metric goes to NannyML by its name there (NannyML's
multiclass metrics are macro averages: `roc_auc_ovr` is its `roc_auc`, `f1_macro` its `f1`).

nannyml is imported lazily: it costs ~18 s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from evergreen.config import ModelConfig, class_key
from evergreen.decisions.alerts import format_figure as _fmt
from evergreen.jsonable import plain as _plain

MIN_REFERENCE_ROWS = 100
_NANNYML_PROBLEM = {
    "binary_classification": "classification_binary",
    "multiclass_classification": "classification_multiclass",
    "regression": "regression",
}
# The config's multiclass metric names -> NannyML's (whose multiclass metrics are macro).
_NANNYML_METRIC = {
    "roc_auc_ovr": "roc_auc",
    "f1_macro": "f1",
    "precision_macro": "precision",
    "recall_macro": "recall",
}


def nannyml_metric(metric: str) -> str:
    """The name NannyML gives the config's metric (its multiclass metrics are macro averages)."""
    return _NANNYML_METRIC.get(metric, metric)

logger = logging.getLogger(__name__)


class MonitorInputError(ValueError):
    """A reference, batch or labels frame the monitor cannot use; the message says why."""


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FeatureDrift:
    """Univariate drift of one feature in the reported chunk."""

    method: str
    value: float | None
    threshold: float | None
    alert: bool
    chunk: str | None = None
    alerting_chunks: int = 0


@dataclass(frozen=True)
class MultivariateDrift:
    """PCA data-reconstruction error of the reported chunk against its reference band."""

    value: float | None
    lower: float | None
    upper: float | None
    alert: bool
    chunk: str | None = None


@dataclass(frozen=True)
class MetricEstimate:
    """An estimated (CBPE/DLE) or realized (labels) metric of the reported chunk."""

    metric: str
    value: float | None
    reference_value: float | None
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool
    kind: Literal["estimated", "realized"] = "estimated"
    sampling_error: float | None = None
    chunk: str | None = None
    rows: int | None = None  # rows the value rests on: the chunk's, or its labelled ones


@dataclass
class MonitorReport:
    """What NannyML found on one batch; `to_dict` gives plain JSON types only."""

    model_name: str
    metric: str
    features: dict[str, FeatureDrift]
    multivariate: MultivariateDrift | None
    estimated_metric: MetricEstimate
    realized_metric: MetricEstimate | None
    rows: int
    labelled_rows: int
    chunks: list[dict[str, Any]]
    start: str | None = None
    end: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # The raw NannyML results, for plots only; never serialized.
    results: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, f in self.features.items() if f.alert]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain Python types (no numpy scalars, NaN as None), raw results left out."""
        return _plain(
            {
                "model_name": self.model_name,
                "metric": self.metric,
                "rows": self.rows,
                "labelled_rows": self.labelled_rows,
                "start": self.start,
                "end": self.end,
                "seconds": round(self.seconds, 4),
                "features": {k: vars(v) for k, v in self.features.items()},
                "drifted_features": self.drifted_features,
                "multivariate": vars(self.multivariate) if self.multivariate else None,
                "estimated_metric": vars(self.estimated_metric),
                "realized_metric": vars(self.realized_metric) if self.realized_metric else None,
                "chunks": self.chunks,
                "notes": self.notes,
            }
        )

    def plots(self, include_plotlyjs: bool = True) -> dict[str, str]:
        """NannyML's plots as HTML pages, one per calculator, plotly.js inlined (nothing is fetched).

        With include_plotlyjs=False the pages hold the figures only, for embedding in a page that
        already carries plotly.js. A plot NannyML cannot draw yields a page saying why.
        """
        pages: dict[str, str] = {}
        for name, result in self.results.items():
            title = f"{self.model_name}: {name.replace('_', ' ')}"
            try:
                with _nannyml_session():
                    figures = _figures(name, result)
                pages[name] = _html_page(title, figures, include_plotlyjs)
            except Exception as exc:  # plotting is auxiliary; never lose the report over it
                logger.warning("NannyML could not plot %s: %s", name, exc)
                pages[name] = _html_page(title, [], False, note=f"plot unavailable: {exc}")
        return pages

    def plots_for(
        self, mode: str, alerting: bool, plotly_head: str | None = None, max_bytes: int | None = None
    ) -> str:
        """The NannyML plots page of a batch (`monitoring.plots`): every plot when the batch
        alerts or the config says `always`, else the summary page (batch-level plots and a
        per-feature drift table; the per-feature figures are most of the cost).

        `plotly_head`: markup for the page's head that loads plotly.js from elsewhere (the
        page then holds the figures only, ~1/20 of the size); None inlines plotly.js. A page
        over `max_bytes` (many features, long references) draws the per-feature plots of the
        drifted features only, and failing that is the summary page, saying so."""
        note = (
            "Quiet batch: per-feature drift plots are drawn for batches that alert "
            "(monitoring.plots: on_alert); set monitoring.plots: always to draw them for every batch."
        )
        if mode == "always" or alerting:
            page = self.plots_page(plotly_head)
            if max_bytes is None or len(page.encode()) <= max_bytes:
                return page
            drifted = self.drifted_features
            cut = (
                f"Per-feature plots of the drifted features only ({', '.join(drifted) or 'none'}): "
                f"every feature's would make this page larger than {max_bytes:,} bytes; the table has them all."
            )
            page = self.plots_page(plotly_head, features=drifted, note=cut, table=True)
            if len(page.encode()) <= max_bytes:
                return page
            note = f"Per-feature plots left out: they would make this page larger than {max_bytes:,} bytes."
        return self.summary_page(note=note, plotly_head=plotly_head)

    def plots_page(
        self, plotly_head: str | None = None, features: list[str] | None = None, note: str = "", table: bool = False
    ) -> str:
        """Every NannyML plot of the report on one HTML page, plotly.js inlined once (a page
        per calculator would carry ~4.6 MB of plotly.js each), or loaded by `plotly_head`."""
        figures: list[Any] = []
        notes: list[str] = [note] if note else []
        for name, result in self.results.items():
            try:
                with _nannyml_session():
                    figures += _figures(name, result, features)
            except Exception as exc:  # plotting is auxiliary; never lose the report over it
                logger.warning("NannyML could not plot %s: %s", name, exc)
                notes.append(f"{name}: plot unavailable: {exc}")
        return _html_page(
            f"{self.model_name}: drift and performance", figures, True, note="; ".join(notes),
            preamble=_feature_table(self.features) if table else "", plotly_head=plotly_head,
        )


    def summary_page(self, note: str = "", plotly_head: str | None = None) -> str:
        """A quiet batch's page: NannyML's batch-level plots (multivariate drift, estimated
        and realized performance) and a table of per-feature drift, plotly.js inlined once.
        The per-feature NannyML figures of `plots_page` are ~90% of its cost; the drift
        values they show are in the table (and logged as MLflow metrics)."""
        figures: list[Any] = []
        notes = [note] if note else []
        for name, result in self.results.items():
            if name == "univariate_drift":
                continue
            try:
                with _nannyml_session():
                    figures += _figures(name, result)
            except Exception as exc:  # plotting is auxiliary; never lose the report over it
                logger.warning("NannyML could not plot %s: %s", name, exc)
                notes.append(f"{name}: plot unavailable: {exc}")
        return _html_page(
            f"{self.model_name}: drift and performance (summary)",
            figures,
            True,
            note="; ".join(notes),
            preamble=_feature_table(self.features),
            plotly_head=plotly_head,
        )


def _feature_table(features: dict[str, FeatureDrift]) -> str:
    import html

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(f.method)}</td>"
        f"<td>{_fmt(f.value)}</td><td>{_fmt(f.threshold)}</td>"
        f"<td>{'ALERT' if f.alert else 'ok'}</td></tr>"
        for name, f in features.items()
    )
    return (
        "<h3>Univariate drift per feature</h3>"
        "<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">"
        "<tr><th>feature</th><th>method</th><th>value</th><th>threshold</th><th>alert</th></tr>"
        f"{rows}</table>"
    )


def _figures(name: str, result: Any, features: list[str] | None = None) -> list[Any]:
    if name == "univariate_drift":
        # One figure per feature: plotly's add_vline over many subplots is quadratic (a minute
        # for 20 features); single-feature figures take a tenth of a second each.
        columns = [c for c in result.column_names if features is None or c in features]
        return [result.filter(column_names=[c]).plot() for c in columns]
    return [result.plot()]


def _html_page(
    title: str,
    figures: list[Any],
    include_plotlyjs: bool,
    note: str = "",
    preamble: str = "",
    plotly_head: str | None = None,
) -> str:
    import html

    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title>'
    if plotly_head is not None:
        head += plotly_head
    elif include_plotlyjs:
        import plotly.offline

        head += (
            "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'
        )
    body = "\n".join(
        [preamble, *(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)]
    ).lstrip("\n")
    if note:
        body += f"<p>{html.escape(note)}</p>"
    return f"<html>\n<head>{head}</head>\n<body>\n{body}\n</body>\n</html>"


@dataclass
class FittedMonitor:
    """NannyML calculators fitted on the monitor reference; reuse it for every batch.

    Not thread-safe: `compute_monitor` sets each calculator's chunker for the batch at hand.
    """

    config: ModelConfig
    reference_rows: int
    reference_chunk_size: int
    reference_metric: float | None
    univariate: Any
    multivariate: Any | None
    estimator: Any
    realized: Any
    categories: dict[str, list[Any]] = field(default_factory=dict)
    threshold_notes: dict[str, str] = field(default_factory=dict)
    fit_seconds: float = 0.0


# ----------------------------------------------------------------------------- fitting


def fit_monitor(reference: pd.DataFrame, config: ModelConfig) -> FittedMonitor:
    """Fit univariate and multivariate drift, CBPE (or DLE) and realized performance on the reference.

    The reference must carry the features, timestamp, prediction, probability (classification)
    and a label for every row.
    """
    nml = _nannyml()
    from nannyml.chunk import SizeBasedChunker

    started = time.perf_counter()
    cols = config.columns
    _require_columns(reference, [*_model_columns(config), cols.target], "monitor reference")
    if len(reference) < MIN_REFERENCE_ROWS:
        raise MonitorInputError(
            f"monitor reference has {len(reference)} rows; at least {MIN_REFERENCE_ROWS} are needed "
            "to calibrate drift thresholds"
        )
    unlabelled = int(reference[cols.target].isna().sum())
    if unlabelled:
        raise MonitorInputError(
            f"monitor reference has {unlabelled} rows without target {cols.target!r}; "
            "it must be fully labelled"
        )
    if config.classes is not None:
        seen = set(_as_class_text(reference[cols.target]).dropna())
        absent = [c for c in config.classes if c not in seen]
        if absent:
            raise MonitorInputError(
                f"monitor reference has no row of class(es) {absent} in {cols.target!r}; NannyML "
                "calibrates each class on the reference, so it needs labelled rows of every class "
                "of columns.probability (use a larger held-out part, or drop the class)"
            )
    categories = {c: _categories(reference[c]) for c in cols.categorical}
    chunk_size = reference_chunk_size(len(reference), config)
    chunker = SizeBasedChunker(chunk_size, incomplete="drop", timestamp_column_name=cols.timestamp)
    problem = _NANNYML_PROBLEM[config.problem_type]
    proba = _nannyml_proba(config)
    metric = nannyml_metric(config.metric)
    labels = reference[cols.target]
    if config.classes is not None:
        labels = _as_class_text(labels)
    target = {cols.target: labels.to_numpy()}

    with _nannyml_session():
        univariate, threshold_notes = _fit_univariate(_drift_frame(reference, config, categories), config, chunker)
        multivariate = None
        if config.monitoring.multivariate_drift:
            multivariate = nml.DataReconstructionDriftCalculator(
                column_names=list(cols.features),
                timestamp_column_name=cols.timestamp,
                chunker=chunker,
            ).fit(_feature_frame(reference, config))
        if config.problem_type != "regression":
            estimator = nml.CBPE(
                metrics=[metric],
                y_pred_proba=proba,
                y_pred=cols.prediction,
                y_true=cols.target,
                problem_type=problem,
                timestamp_column_name=cols.timestamp,
                chunker=chunker,
            ).fit(_output_frame(reference, config).assign(**target))
        else:
            estimator = nml.DLE(
                feature_column_names=list(cols.features),
                y_pred=cols.prediction,
                y_true=cols.target,
                metrics=[metric],
                timestamp_column_name=cols.timestamp,
                chunker=chunker,
                hyperparameters={
                    "random_state": config.training.seed,
                    "n_jobs": config.training.nthread,
                    "verbosity": -1,
                },
            ).fit(_feature_frame(reference, config).assign(**target))
        realized = nml.PerformanceCalculator(
            metrics=[metric],
            y_true=cols.target,
            y_pred=cols.prediction,
            y_pred_proba=proba,
            problem_type=problem,
            timestamp_column_name=cols.timestamp,
            chunker=chunker,
        ).fit(_output_frame(reference, config).assign(**target))

    ref_values = _analysis_or_reference(realized.result, "reference")[(metric, "value")]
    return FittedMonitor(
        config=config,
        reference_rows=len(reference),
        reference_chunk_size=chunk_size,
        reference_metric=_float(ref_values.mean()),
        univariate=univariate,
        multivariate=multivariate,
        estimator=estimator,
        realized=realized,
        categories=categories,
        threshold_notes=threshold_notes,
        fit_seconds=time.perf_counter() - started,
    )


METHOD_MAXIMUM = {"jensen_shannon": 1.0, "hellinger": 1.0, "kolmogorov_smirnov": 1.0, "l_infinity": 1.0}
"""The largest value each bounded drift distance can take (Jensen-Shannon in base 2)."""


def _fit_univariate(frame: pd.DataFrame, config: ModelConfig, chunker: Any) -> tuple[Any, dict[str, str]]:
    """NannyML's univariate drift, its thresholds NannyML's own default (mean + 3 standard
    deviations of the distance over reference chunks) but never above the distance's maximum.

    Reference chunks are taken in row order. When a feature's threshold reaches the maximum
    (the distance is bounded, the threshold is then useless: it can never be exceeded), its
    reference chunks differ as much as the distance can tell: the reference is ordered by
    that feature, or drifts within itself, or has too few chunks for the spread to mean
    anything. Such a feature's threshold is computed again on reference chunks of the same
    size whose values of that feature are shuffled (seeded): the spread a batch of that
    size shows by chance. Returns the fitted calculator and a note per feature so treated."""
    nml = _nannyml()
    cols, mon = config.columns, config.monitoring

    def fit(data: pd.DataFrame) -> Any:
        return nml.UnivariateDriftCalculator(
            column_names=list(cols.features),
            treat_as_categorical=list(cols.categorical),
            treat_as_numerical=list(cols.continuous),
            timestamp_column_name=cols.timestamp,
            continuous_methods=list(mon.continuous_methods),
            categorical_methods=list(mon.categorical_methods),
            chunker=chunker,
            thresholds=_bounded_thresholds([*mon.continuous_methods, *mon.categorical_methods]),
        ).fit(data)

    calculator = fit(frame)
    capped = _capped_features(calculator, config)
    if not capped:
        return calculator, {}
    rng = np.random.default_rng(config.training.seed)
    shuffled = frame.assign(**{c: frame[c].to_numpy()[rng.permutation(len(frame))] for c in capped})
    calculator = fit(shuffled)
    still = _capped_features(calculator, config)
    notes = {}
    for name, method in capped.items():
        if name in still:
            notes[name] = (
                f"{name}: its {method} threshold reaches the distance's maximum "
                f"{METHOD_MAXIMUM[method]:g} even on shuffled reference chunks: chunks this small "
                "(monitoring.chunk_size / data.rows_per_batch) cannot show drift in it (too many distinct "
                "values?); it will not alert"
            )
        else:
            notes[name] = (
                f"{name}: reference chunks in row order differ as much as {method} can tell (the "
                "reference is ordered by it, or drifts within itself); its threshold comes from "
                "shuffled reference chunks instead"
            )
        logger.warning("drift threshold of %s", notes[name])
    return calculator, notes


def _bounded_thresholds(methods: list[str]) -> dict[str, Any]:
    """NannyML's default threshold of each bounded method in `methods`, capped at its maximum."""
    from nannyml.drift.univariate.calculator import DEFAULT_THRESHOLDS

    capped = _capped_threshold_class()
    return {m: capped(DEFAULT_THRESHOLDS[m], METHOD_MAXIMUM[m]) for m in dict.fromkeys(methods) if m in METHOD_MAXIMUM}


_CAPPED: list[Any] = []


def _capped_threshold_class() -> Any:
    """A NannyML `Threshold` that applies another one and caps its upper value at a maximum
    (what NannyML's own limit does for the Kolmogorov-Smirnov statistic; its Jensen-Shannon,
    Hellinger and L-infinity methods carry no upper limit). Defined once, on first use:
    nannyml is imported lazily."""
    if not _CAPPED:
        from nannyml.thresholds import Threshold

        class CappedThreshold(Threshold, type="evergreen_capped"):  # type: ignore[call-arg]
            def __init__(self, inner: Threshold, maximum: float) -> None:
                self.inner, self.maximum = inner, maximum

            def thresholds(self, data: np.ndarray, **kwargs: Any) -> tuple[float | None, float | None]:
                lower, upper = self.inner.thresholds(data, **kwargs)
                if upper is not None and upper >= self.maximum:
                    upper = self.maximum
                return lower, upper

        _CAPPED.append(CappedThreshold)
    return _CAPPED[0]


def _capped_features(calculator: Any, config: ModelConfig) -> dict[str, str]:
    """Features with a bounded method whose upper threshold sits at the method's maximum."""
    table = calculator.result.filter(period="reference").to_df()
    out: dict[str, str] = {}
    for name in config.columns.features:
        methods = (
            config.monitoring.categorical_methods
            if name in config.columns.categorical
            else config.monitoring.continuous_methods
        )
        for method in methods:
            key = (name, method, "upper_threshold")
            if method in METHOD_MAXIMUM and key in table.columns:
                upper = _float(table[key].iloc[0]) if len(table) else None
                if upper is not None and upper >= METHOD_MAXIMUM[method]:
                    out[name] = method
                    break
    return out


def reference_chunk_size(reference_rows: int, config: ModelConfig) -> int:
    """Rows per reference chunk: the batch (or chunk) size, but at least 10 reference chunks.

    Thresholds are the spread of the statistic over reference chunks: chunks the size of a
    production batch make that spread the one a batch shows by chance.
    """
    wanted = config.monitoring.chunk_size or config.data.rows_per_batch
    return max(1, min(wanted, reference_rows // 10))


# ----------------------------------------------------------------------------- computing


def compute_monitor(
    fitted: FittedMonitor, batch: pd.DataFrame, labels: pd.DataFrame | None
) -> MonitorReport:
    """Run the fitted calculators on one batch.

    `labels` are (id, target) rows joined on id; the realized metric covers the labelled rows
    only and is None when no row of the batch is labelled. Without `labels`, a target column
    already in the batch is used.
    """
    started = time.perf_counter()
    piece = _calculate(fitted, batch, labels, _chunk_size(fitted.config, len(batch)))
    return _report(fitted, piece.tables, piece.results, piece.rows, piece.labelled, piece.start, piece.end, started)


PIECE_ROWS = 1_048_576
"""Rows NannyML and GX work on at once where a batch is read in pieces
(`compute_monitor_chunks`): the monitor's memory is that of a batch this size."""


def compute_monitor_chunks(
    fitted: FittedMonitor,
    chunks: Iterable[pd.DataFrame],
    labels: pd.DataFrame | None,
    rows: int = PIECE_ROWS,
) -> MonitorReport:
    """`compute_monitor` on a batch given as chunks of rows (in order), with the memory of
    about `rows` rows: the chunks are joined into pieces of `rows` rows, the calculators run
    on each piece and their results are merged. A batch of one piece is `compute_monitor`'s.

    With `monitoring.chunk_size` set, the pieces are whole NannyML chunks (the last one takes
    the incomplete rest, as NannyML appends it): the chunks and the figures are exactly
    those of `compute_monitor`. Without it the batch is one chunk, and its figures merge
    the pieces': each value the mean of the pieces' weighted by their rows (the realized
    metric by their labelled rows; the reconstruction error is such a mean exactly, a drift
    distance or an AUC closely), its alert the merged value against the (reference)
    thresholds. The plots show the pieces as chunks."""
    started = time.perf_counter()
    size = fitted.config.monitoring.chunk_size
    if labels is not None:
        labels = _latest_labels(labels, fitted.config)
    pieces: list[_Piece] = []
    offset = 0
    for frame in _pieces(chunks, rows, size):
        chunk_size = size if size and len(frame) >= size else len(frame)
        pieces.append(_calculate(fitted, frame, labels, chunk_size, offset))
        offset += len(frame)
    if not pieces:
        raise MonitorInputError("batch has no rows; validate it before monitoring")
    if len(pieces) == 1:
        p = pieces[0]
        return _report(fitted, p.tables, p.results, p.rows, p.labelled, p.start, p.end, started)
    names = list(dict.fromkeys(n for p in pieces for n in p.results))
    if size and "realized_performance" in names:  # a piece without labels: its chunks unvalued
        for p in pieces:
            if "realized_performance" not in p.tables:
                template = next(q.tables["realized_performance"] for q in pieces if "realized_performance" in q.tables)
                p.tables["realized_performance"] = _unvalued(template, p.tables["estimated_performance"])
    tables = {n: pd.concat([p.tables[n] for p in pieces if n in p.tables], ignore_index=True) for n in names}
    results = {n: _joined_result([p.results[n] for p in pieces if n in p.results]) for n in names}
    labelled = np.concatenate([p.labelled for p in pieces])
    rows_total = sum(p.rows for p in pieces)
    if not size:
        weights = {n: np.array([p.rows for p in pieces if n in p.tables], dtype=float) for n in names}
        if "realized_performance" in tables:
            weights["realized_performance"] = np.array(
                [p.labelled.sum() for p in pieces if "realized_performance" in p.tables], dtype=float
            )
        tables = {n: _merge_one_chunk(t, weights[n], rows_total) for n, t in tables.items()}
    starts = [p.start for p in pieces if p.start is not None]
    ends = [p.end for p in pieces if p.end is not None]
    return _report(
        fitted, tables, results, rows_total, labelled,
        min(starts) if starts else None, max(ends) if ends else None, started,
    )


@dataclass
class _Piece:
    """What the calculators found on some rows of a batch (row positions from `offset`)."""

    rows: int
    labelled: np.ndarray
    tables: dict[str, pd.DataFrame]
    results: dict[str, Any]
    start: Any
    end: Any


def _chunk_size(config: ModelConfig, rows: int) -> int:
    size = config.monitoring.chunk_size
    return size if size and rows >= size else rows


def _pieces(chunks: Iterable[pd.DataFrame], rows: int, size: int | None) -> Iterator[pd.DataFrame]:
    """The chunks joined into pieces of `rows` rows (of whole `size`-row NannyML chunks when
    `size` is set; the last piece then also holds the incomplete rest)."""
    length = max(1, rows // size) * size if size else max(rows, 1)
    spare = size or 0
    buffer: list[pd.DataFrame] = []
    held = 0
    for chunk in chunks:
        if not len(chunk):
            continue
        buffer.append(chunk)
        held += len(chunk)
        while held >= length + spare:
            joined = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
            yield joined.iloc[:length]
            rest = joined.iloc[length:]
            buffer, held = ([rest] if len(rest) else []), len(rest)
    if buffer:
        yield pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)


def _calculate(
    fitted: FittedMonitor, batch: pd.DataFrame, labels: pd.DataFrame | pd.Series | None, chunk_size: int,
    offset: int = 0,
) -> _Piece:
    """The calculators on `batch` in chunks of `chunk_size` rows; its chunks' positions
    shifted by `offset` (its first row's position in the whole batch)."""
    from nannyml.chunk import SizeBasedChunker

    config = fitted.config
    cols = config.columns
    _require_columns(batch, _model_columns(config), "batch")
    if batch.empty:
        raise MonitorInputError("batch has no rows; validate it before monitoring")
    target = _join_labels(batch, labels, config)
    labelled = int(target.notna().sum())
    frames = {
        "drift": lambda: _drift_frame(batch, config, fitted.categories),
        "features": lambda: _feature_frame(batch, config),
        "outputs": lambda: _output_frame(batch, config),
        "labelled": lambda: _output_frame(batch, config).assign(**{cols.target: target.to_numpy()}),
    }
    results: dict[str, Any] = {}
    with _nannyml_session():
        for name, calc, frame_kind in _calculators(fitted):
            if name == "realized_performance" and not labelled:
                continue
            calc.chunker = SizeBasedChunker(
                chunk_size, incomplete="append", timestamp_column_name=cols.timestamp
            )
            frame = frames[frame_kind]()
            result = (
                calc.estimate(frame) if name == "estimated_performance" else calc.calculate(frame)
            )
            # A copy of the batch rides on each result; plots of kind 'drift' do not need it.
            if hasattr(result, "analysis_data"):
                result.analysis_data = None
            if offset:
                result.data = _shifted(result.data, offset)
            results[name] = result
    tables = {name: _analysis_or_reference(res, "analysis") for name, res in results.items()}
    ts = batch[cols.timestamp]
    return _Piece(
        rows=len(batch), labelled=target.notna().to_numpy(), tables=tables, results=results,
        start=ts.min(), end=ts.max(),
    )


def _report(
    fitted: FittedMonitor,
    tables: dict[str, pd.DataFrame],
    results: dict[str, Any],
    rows: int,
    labelled: np.ndarray,
    start: Any,
    end: Any,
    started: float,
) -> MonitorReport:
    """The report of the calculators' tables: the batch-level figures are the latest chunk's."""
    config = fitted.config
    features, feature_chunks = _feature_drift(tables["univariate_drift"], config)
    multivariate = (
        _multivariate(tables["multivariate_drift"]) if "multivariate_drift" in tables else None
    )
    metric = nannyml_metric(config.metric)
    estimated = _metric(
        tables["estimated_performance"], metric, fitted.reference_metric, "estimated", config.metric
    )
    realized = None
    if "realized_performance" in tables:
        realized = _metric(
            tables["realized_performance"], metric, fitted.reference_metric, "realized", config.metric,
            labelled=labelled,
        )
    return MonitorReport(
        model_name=config.name,
        metric=config.metric,
        features=features,
        multivariate=multivariate,
        estimated_metric=estimated,
        realized_metric=realized,
        rows=rows,
        labelled_rows=int(labelled.sum()),
        chunks=_chunk_rows(tables, feature_chunks, metric, config.metric),
        start=_plain(start),
        end=_plain(end),
        seconds=time.perf_counter() - started,
        notes=list(fitted.threshold_notes.values()),
        results=results,
    )


def _chunk_column(table: pd.DataFrame, name: str) -> Any:
    """The column of a results table holding the chunks' `name` (key, start_index, ...)."""
    return next(c for c in table.columns if c[0] == "chunk" and c[-1] == name)


def _shifted(data: pd.DataFrame, offset: int) -> pd.DataFrame:
    """A result's table with its analysis chunks' positions moved by `offset` rows."""
    data = data.copy()
    analysis = (data[_chunk_column(data, "period")] == "analysis").to_numpy()
    start, end, key = (_chunk_column(data, n) for n in ("start_index", "end_index", "key"))
    data.loc[analysis, start] = data.loc[analysis, start] + offset
    data.loc[analysis, end] = data.loc[analysis, end] + offset
    data.loc[analysis, key] = [f"[{a}:{b}]" for a, b in zip(data.loc[analysis, start], data.loc[analysis, end], strict=True)]
    return data


def _joined_result(results: list[Any]) -> Any:
    """One NannyML result holding the reference chunks once and the analysis chunks of
    every piece (positions already shifted), for its plots."""
    import copy

    first = results[0]
    if len(results) == 1:
        return first
    period = _chunk_column(first.data, "period")
    parts = [first.data] + [r.data[r.data[period] == "analysis"] for r in results[1:]]
    joined = copy.copy(first)
    data = pd.concat(parts, ignore_index=True)
    index = _chunk_column(data, "chunk_index")
    analysis = (data[period] == "analysis").to_numpy()
    data.loc[analysis, index] = np.arange(int(analysis.sum()))
    joined.data = data
    return joined


def _unvalued(template: pd.DataFrame, chunks: pd.DataFrame) -> pd.DataFrame:
    """`template`'s columns for the chunks of `chunks` (same chunk columns), every figure
    missing: the realized metric of chunks without labels."""
    out = pd.DataFrame(index=range(len(chunks)), columns=template.columns, dtype=object)
    for column in template.columns:
        if column[0] == "chunk" and column in chunks.columns:
            out[column] = chunks[column].to_numpy()
        elif column[-1] == "alert":
            out[column] = False
        elif column[0] != "chunk":
            out[column] = np.nan
    return out


def _merge_one_chunk(table: pd.DataFrame, weights: np.ndarray, rows: int) -> pd.DataFrame:
    """The pieces' rows of a results table (one chunk each) merged into the one chunk of the
    whole batch: values and other figures weighted by `weights`, sampling errors combined as
    those of a weighted mean, thresholds kept, alerts judged again on the merged values."""
    out: dict[Any, Any] = {}
    w = weights / weights.sum() if weights.sum() else np.full(len(weights), 1.0 / len(weights))
    for column in table.columns:
        values = table[column]
        last = column[-1]
        if column[0] == "chunk":
            out[column] = {
                "key": f"[0:{rows - 1}]", "chunk_index": 0, "start_index": 0, "end_index": rows - 1,
                "start_date": values.min(), "end_date": values.max(), "period": "analysis",
            }.get(last, values.iloc[0])
        elif last in ("upper_threshold", "lower_threshold"):
            present = values.dropna()
            out[column] = present.iloc[0] if len(present) else None
        elif last == "alert":
            continue
        elif pd.api.types.is_numeric_dtype(values) or values.isna().all():
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            ok = ~np.isnan(numbers)
            if not ok.any():
                out[column] = np.nan
            elif last == "sampling_error":
                share = w[ok] / w[ok].sum()
                out[column] = float(np.sqrt(np.sum((share * numbers[ok]) ** 2)))
            else:
                out[column] = float(np.sum(w[ok] * numbers[ok]) / w[ok].sum())
        else:
            out[column] = values.iloc[-1]
    for column in table.columns:
        if column[-1] != "alert":
            continue
        prefix = column[:-1]
        value = out.get((*prefix, "value"))
        upper, lower = out.get((*prefix, "upper_threshold")), out.get((*prefix, "lower_threshold"))
        alert = value is not None and not pd.isna(value) and (
            (upper is not None and not pd.isna(upper) and value > upper)
            or (lower is not None and not pd.isna(lower) and value < lower)
        )
        out[column] = bool(alert)
    merged = pd.DataFrame([out])
    merged.columns = pd.MultiIndex.from_tuples(list(out))
    return merged[table.columns]


def _calculators(fitted: FittedMonitor) -> Iterator[tuple[str, Any, str]]:
    """Each calculator with the kind of frame it runs on."""
    yield "univariate_drift", fitted.univariate, "drift"
    if fitted.multivariate is not None:
        yield "multivariate_drift", fitted.multivariate, "features"
    regression = fitted.config.problem_type == "regression"
    yield "estimated_performance", fitted.estimator, "features" if regression else "outputs"
    yield "realized_performance", fitted.realized, "labelled"


def _join_labels(
    batch: pd.DataFrame, labels: pd.DataFrame | pd.Series | None, config: ModelConfig
) -> pd.Series:
    """The batch's target aligned to its rows (NaN where no label has arrived): floats, or
    class labels as text for multiclass (`_target_for_nannyml`). `labels` may be the
    id -> label Series `_latest_labels` made (a batch in pieces joins it once per piece)."""
    id_col, target = config.columns.id, config.columns.target
    if labels is None:
        if target in batch.columns:
            return _target_for_nannyml(batch[target], config).reset_index(drop=True)
        return pd.Series(np.nan, index=range(len(batch)), dtype=float)
    latest = labels if isinstance(labels, pd.Series) else _latest_labels(labels, config)
    values = batch[id_col].map(latest)
    return _target_for_nannyml(values, config).reset_index(drop=True)


def _latest_labels(labels: pd.DataFrame, config: ModelConfig) -> pd.Series:
    """Label by id; a label delivered twice counts once: the latest delivery wins."""
    id_col, target = config.columns.id, config.columns.target
    _require_columns(labels, [id_col, target], "labels")
    return labels.drop_duplicates(subset=id_col, keep="last").set_index(id_col)[target]


def _target_for_nannyml(values: pd.Series, config: ModelConfig) -> pd.Series:
    """Targets as NannyML reads them: floats, or multiclass labels as class text."""
    if config.problem_type == "multiclass_classification":
        return _as_class_text(values)
    return pd.to_numeric(values, errors="coerce").astype(float)


def _as_class_text(values: pd.Series) -> pd.Series:
    """Class labels as text (`class_key`), None where missing, in an object column (NannyML
    0.13 trips on pandas 3's `str` dtype). Mapped per distinct value."""
    present = values.notna()
    mapping = {v: class_key(v) for v in pd.unique(values[present])}
    out = np.full(len(values), None, dtype=object)
    out[present.to_numpy()] = values[present].map(mapping).to_numpy(dtype=object)
    return pd.Series(out, index=values.index, dtype=object)


def _nannyml_proba(config: ModelConfig) -> str | dict[str, str] | None:
    """NannyML's `y_pred_proba`: the column (binary), class text -> column (multiclass)."""
    if config.problem_type == "regression":
        return None
    return config.columns.probability


def _model_columns(config: ModelConfig) -> list[str]:
    cols = config.columns
    return [cols.timestamp, *cols.features, cols.prediction, *config.probability_columns]


def _require_columns(frame: pd.DataFrame, needed: list[str], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MonitorInputError(
            f"{what} lacks columns {missing}; validate it first or fix columns.* in the config"
        )


def _output_frame(frame: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    """Timestamp and model outputs: all that CBPE and the realized metric need (multiclass
    predictions as class text, as the targets are)."""
    cols = config.columns
    out = frame[[cols.timestamp, cols.prediction, *config.probability_columns]].reset_index(drop=True)
    if config.problem_type == "multiclass_classification":
        out[cols.prediction] = _as_class_text(out[cols.prediction])
    return out


def _feature_frame(frame: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    """Timestamp, features and outputs with categoricals as object dtype (multivariate drift, DLE).

    NannyML 0.13 recognises categoricals by dtype 'object'/'category'/'bool' and trips on
    pandas 3's `str` dtype; int-coded categoricals must be categorical too.
    """
    out = frame[_model_columns(config)].reset_index(drop=True)
    for col in config.columns.categorical:
        if not pd.api.types.is_bool_dtype(out[col].dtype):
            out[col] = out[col].astype(object)
    return out


def _drift_frame(
    frame: pd.DataFrame, config: ModelConfig, categories: dict[str, list[Any]]
) -> pd.DataFrame:
    """Timestamp and features with categoricals as float codes of the reference categories.

    NannyML's categorical distances count values with np.unique, which sorts Python objects:
    1.5 s per million strings and column, against 0.05 s for float codes. Values unseen in the
    reference share one code (-1), nulls stay null: the distances come out the same.
    """
    cols = config.columns
    out = frame[[cols.timestamp, *cols.features]].reset_index(drop=True)
    for col, values in categories.items():
        series = out[col]
        codes = pd.Index(values).get_indexer(series).astype(float)
        codes[series.isna().to_numpy()] = np.nan
        out[col] = codes
    return out


def _categories(reference: pd.Series) -> list[Any]:
    """The distinct non-null values of a reference column, in a stable order."""
    return sorted(pd.unique(reference.dropna()).tolist(), key=lambda v: (type(v).__name__, str(v)))


# ----------------------------------------------------------------------------- reading results


def _analysis_or_reference(result: Any, period: str) -> pd.DataFrame:
    return result.filter(period=period).to_df().reset_index(drop=True)


def _feature_drift(
    table: pd.DataFrame, config: ModelConfig
) -> tuple[dict[str, FeatureDrift], list[dict]]:
    cols = config.columns
    last = len(table) - 1
    features: dict[str, FeatureDrift] = {}
    per_chunk: list[dict[str, Any]] = [{} for _ in range(len(table))]
    for name in cols.features:
        methods = (
            config.monitoring.categorical_methods
            if name in cols.categorical
            else config.monitoring.continuous_methods
        )
        candidates = []
        for method in methods:
            alerts = table[(name, method, "alert")].fillna(False).astype(bool)
            candidates.append((method, alerts))
        method, alerts = next(((m, a) for m, a in candidates if a.iloc[last]), candidates[0])
        upper = table.get((name, method, "upper_threshold"))
        values = table[(name, method, "value")]
        features[name] = FeatureDrift(
            method=method,
            value=_float(values.iloc[last]),
            threshold=_float(upper.iloc[last]) if upper is not None else None,
            alert=bool(alerts.iloc[last]),
            chunk=str(table[("chunk", "chunk", "key")].iloc[last]),
            alerting_chunks=int(alerts.sum()),
        )
        for i in range(len(table)):
            per_chunk[i][name] = {
                "method": method,
                "value": _float(values.iloc[i]),
                "alert": bool(alerts.iloc[i]),
            }
    return features, per_chunk


def _multivariate(table: pd.DataFrame) -> MultivariateDrift:
    row = table.iloc[-1]
    key = "reconstruction_error"
    return MultivariateDrift(
        value=_float(row[(key, "value")]),
        lower=_float(row[(key, "lower_threshold")]),
        upper=_float(row[(key, "upper_threshold")]),
        alert=bool(row[(key, "alert")]),
        chunk=str(row[("chunk", "key")]),
    )


def _metric(
    table: pd.DataFrame,
    metric: str,
    reference_value: float | None,
    kind: Literal["estimated", "realized"],
    name: str | None = None,
    labelled: np.ndarray | None = None,
) -> MetricEstimate:
    """The metric `metric` (NannyML's name) of the table's latest chunk with a value,
    reported as `name` (the config's; default: the same)."""
    # The latest chunk with a value: for the realized metric, the latest chunk that has labels.
    valued = table[table[(metric, "value")].notna()]
    row = (valued if len(valued) else table).iloc[-1]
    start, end = int(row[("chunk", "start_index")]), int(row[("chunk", "end_index")])
    rows = end - start + 1 if labelled is None else int(labelled[start : end + 1].sum())
    return MetricEstimate(
        metric=name or metric,
        value=_float(row[(metric, "value")]),
        reference_value=reference_value,
        lower_threshold=_float(row.get((metric, "lower_threshold"))),
        upper_threshold=_float(row.get((metric, "upper_threshold"))),
        alert=bool(row.get((metric, "alert"), False))
        and _float(row[(metric, "value")]) is not None,
        kind=kind,
        sampling_error=_float(row.get((metric, "sampling_error"))),
        chunk=str(row[("chunk", "key")]),
        rows=rows,
    )


def _chunk_rows(
    tables: dict[str, pd.DataFrame], features: list[dict], metric: str, name: str | None = None
) -> list[dict[str, Any]]:
    uni = tables["univariate_drift"]
    rows = []
    for i in range(len(uni)):
        start, end = (
            int(uni[("chunk", "chunk", "start_index")].iloc[i]),
            int(uni[("chunk", "chunk", "end_index")].iloc[i]),
        )
        row: dict[str, Any] = {
            "key": str(uni[("chunk", "chunk", "key")].iloc[i]),
            "index": i,
            "start_index": start,
            "end_index": end,
            "rows": end - start + 1,
            "start_date": _plain(uni[("chunk", "chunk", "start_date")].iloc[i]),
            "end_date": _plain(uni[("chunk", "chunk", "end_date")].iloc[i]),
            "features": features[i],
            "drifted_features": [name for name, f in features[i].items() if f["alert"]],
        }
        if "multivariate_drift" in tables:
            mv = tables["multivariate_drift"]
            row["multivariate"] = {
                "value": _float(mv[("reconstruction_error", "value")].iloc[i]),
                "upper": _float(mv[("reconstruction_error", "upper_threshold")].iloc[i]),
                "alert": bool(mv[("reconstruction_error", "alert")].iloc[i]),
            }
        for name, label in (
            ("estimated_performance", "estimated"),
            ("realized_performance", "realized"),
        ):
            if name in tables and i < len(tables[name]):
                t = tables[name]
                row[label] = {
                    "metric": name or metric,
                    "value": _float(t[(metric, "value")].iloc[i]),
                    "alert": bool(t[(metric, "alert")].iloc[i]),
                }
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- helpers


def _nannyml() -> Any:
    # NannyML posts usage analytics to a remote host unless this variable exists; Evergreen
    # sends nothing off the machine, whoever calls it.
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    import nannyml

    return nannyml


@contextlib.contextmanager
def _nannyml_session() -> Iterator[None]:
    """Run NannyML on pandas 3 quietly.

    NannyML 0.13 builds frames internally that break with pandas 3's inferred `str` dtype
    (DLE: "ArrowStringArray does not support reshape"): string inference is off while it
    runs (the option is deprecated, hence its warning is silenced). Its per-call chatter
    (few chunks, sampling warnings) is silenced too.
    """
    nml_logger = logging.getLogger("nannyml")
    level = nml_logger.level
    nml_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pd.option_context("future.infer_string", False):
                yield
    finally:
        nml_logger.setLevel(level)


def _float(value: Any) -> float | None:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
