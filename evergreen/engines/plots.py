"""Static plots logged with training runs (matplotlib, no display)."""

from __future__ import annotations

from typing import Any


def _figure(width: float = 6.0, height: float = 4.0) -> tuple[Any, Any]:
    # A plain Figure, not pyplot: pyplot keeps every figure it makes until closed, which a
    # long-lived process (a test session, a backtest) would accumulate.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def feature_importance(importance: dict[str, float]) -> Any:
    """Horizontal bars of total gain per feature."""
    fig, ax = _figure()
    items = sorted(importance.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance")
    fig.tight_layout()
    return fig


def calibration_curve(calibration: Any) -> Any:
    """Mean predicted probability vs observed rate per bin, against the diagonal (for a
    multiclass model: the top-label confidence vs the share of right predictions)."""
    fig, ax = _figure(5, 5)
    bins = [b for b in calibration.bins if b.n > 0]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot([b.mean_predicted for b in bins], [b.observed for b in bins], marker="o", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate (positives; multiclass: right predictions)")
    ax.set_title(f"Calibration (Brier {calibration.brier:.4f})")
    ax.legend()
    fig.tight_layout()
    return fig


def monitoring_history_page(model: str, metric: str, points: list[dict[str, Any]], plotly_head: str) -> str:
    """A model's monitoring over batches as one Plotly HTML page: estimated and realized
    metric (top) and the share of drifted features (bottom) per batch, the batches in order.

    `points`: one dict per batch with `step`, `batch`, `estimated`, `realized`, `drift_share`
    (None where unknown). `plotly_head` loads plotly.js (the page holds the figure only)."""
    import html

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = sorted(points, key=lambda p: p["step"])
    x = [str(p["batch"]) for p in rows]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=(
        f"{metric}: estimated (NannyML, no labels) and realized (labels)", "share of drifted features",
    ))  # fmt: skip
    for key, name in (("estimated", f"estimated {metric}"), ("realized", f"realized {metric}")):
        fig.add_trace(go.Scatter(x=x, y=[p.get(key) for p in rows], mode="lines+markers", name=name), row=1, col=1)
    fig.add_trace(
        go.Bar(x=x, y=[p.get("drift_share") for p in rows], name="drifted features (share)", marker_color="#d62728"),
        row=2, col=1,
    )
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_layout(height=620, title=f"{model}: monitoring over {len(rows)} batches", hovermode="x unified")
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id="evergreen-history")
    title = html.escape(f"{model}: monitoring history")
    return f'<html>\n<head><meta charset="utf-8"><title>{title}</title>{plotly_head}</head>\n<body>\n{body}\n</body>\n</html>'
