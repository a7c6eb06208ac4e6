"""The bootstrap's first champion learns every reference row (`training.refit_on_holdout`, as
a retrain): early stopping chooses its rounds on the newest `training.evaluation_fraction`
held out, then the served model is refit on all of the reference; the fit without the
hold-out is kept as its probe, and what must be measured on unseen rows (the logged
evaluation, the monitor's NannyML reference) measures the probe."""

from __future__ import annotations

import numpy as np
import pytest

from evergreen.adapters import io
from evergreen.adapters.wiring import in_memory, memory_ports
from evergreen.loop import bootstrap, retraining
from tests.support import write_toy_drift_stream


@pytest.mark.parametrize("refit", [True, False])
def test_the_first_champion_is_refit_on_the_whole_reference(toy_config, refit: bool) -> None:  # noqa: ANN001
    base = in_memory(toy_config(), f"boot-refit-{refit}")
    cfg = base.model_copy(update={"training": base.training.model_copy(update={"refit_on_holdout": refit})})
    write_toy_drift_stream(cfg, cfg.data.root, 2, 200, drift_at=1)
    ports = memory_ports(cfg)
    result = bootstrap.bootstrap(ports, cfg)
    assert result.status == "registered" and result.bootstrap
    assert ("then refit on all" in result.message) is refit, result.message

    champion = ports.registry.load_alias("champion")
    model = champion.model
    assert (model.probe is not None) is refit
    reference = io.read_table(cfg.data.path("training_reference"), datetime_columns=[cfg.columns.timestamp])
    holdout = retraining.hold_out_recent(reference, cfg)
    probe_scores = model.held_out().predict(holdout.evaluation).probability
    logged = ports.registry.champion_reference()[1][cfg.columns.probability].to_numpy()
    # The monitor's reference and the logged metric are the probe's, on rows it never saw.
    np.testing.assert_allclose(logged, probe_scores, atol=1e-7)
    assert result.metrics[cfg.metric] == pytest.approx(retraining.evaluate_model(model.held_out(), holdout.evaluation, cfg).value)
    if refit:
        # The served model differs from the probe: it learned the hold-out too.
        assert not np.allclose(model.predict(holdout.evaluation).probability, probe_scores, atol=1e-7)
