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
