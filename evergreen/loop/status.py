"""A model's story on one page: champion and canary (which version, trained on what, when and
why they got there), the open alert episode, the last decisions and the last batches' figures,
as markdown for the `<model>-status` artifact every flow updates; one row per model for the
fleet overview; the alias history as a readable table.

`read_story` reads what the loop already keeps (the batch ledger, the registry's versions and
alias history) through the ports; everything else here is pure and renders a `ModelStory`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from evergreen.adapters.ledger import BatchLedger, BatchRecord
from evergreen.adapters.ports import BatchStore, ModelRegistry
from evergreen.adapters.registry import CANARY, CHALLENGER, CHAMPION, AliasMove, VersionInfo
from evergreen.decisions.episodes import Episode, realized_effect
from evergreen.loop import state
from evergreen.reports import PromotionResult, RetrainResult

LAST_BATCHES = 10
LAST_DECISIONS = 12


@dataclass(frozen=True)
class ModelStory:
    """What the status page is made of: the model's config name, its metric, its registered
    versions (with their tags), the alias history (oldest first), the batch ledger and where
    each alias points (`aliases`: alias -> version; MLflow's version search leaves a
    version's aliases out, so `read_story` resolves them one by one; when not given, the
    versions' own `aliases` are used)."""

    model: str
    metric: str
    versions: list[VersionInfo] = field(default_factory=list)
    history: list[AliasMove] = field(default_factory=list)
    ledger: BatchLedger = field(default_factory=lambda: BatchLedger.model_validate({}))
    aliases: dict[str, str] | None = None

    def by_alias(self, alias: str) -> VersionInfo | None:
        if self.aliases is not None:
            number = self.aliases.get(alias)
            return None if number is None else self.version(number)
        return next((v for v in self.versions if alias in v.aliases), None)

    def version(self, number: str | None) -> VersionInfo | None:
        return next((v for v in self.versions if v.version == number), None)


@dataclass(frozen=True)
class Decision:
    """One decision of the loop, as a row of the status page's decisions table."""

    time: str
    step: str
    subject: str
    decision: str
    why: str


def read_story(model: str, metric: str, store: BatchStore, registry: ModelRegistry) -> ModelStory:
    """The story's inputs from the ports: the ledger, the versions, the aliases, the alias
    history."""
    aliases = {}
    for alias in (CHAMPION, CANARY, CHALLENGER):
        version = registry.version_by_alias(alias)
        if version is not None:
            aliases[alias] = version.version
    return ModelStory(
        model=model,
        metric=metric,
        versions=registry.list_versions(),
        history=registry.alias_history(),
        ledger=store.read_ledger(),
        aliases=aliases,
    )


# ----------------------------------------------------------------------------- rendering


def status_markdown(story: ModelStory, batches: int = LAST_BATCHES, decisions: int = LAST_DECISIONS) -> str:
    """The `<model>-status` page: serving versions, the alert episode, the last decisions and
    the last batches' figures."""
    lines = [f"# {story.model}: {model_state(story)}", ""]
    lines += ["## Serving", "", *serving_table(story), ""]
    lines += ["## Alert episode", "", episode_sentence(story.ledger.episode), ""]
    rows = last_decisions(story, decisions)
    lines += [f"## Last decisions (newest first, up to {decisions})", ""]
    lines += table(["time (UTC)", "step", "subject", "decision", "why"], [[r.time, r.step, r.subject, r.decision, r.why] for r in rows]) if rows else ["No decision yet."]
    lines += ["", f"## Last batches (newest first, up to {batches})", ""]
    recent = last_batches(story.ledger, batches)
    if recent:
        head = ["batch", "valid", f"estimated {story.metric}", f"realized {story.metric}", "drift share", "alert", "decision"]
        lines += table(head, [batch_row(r) for r in recent])
    else:
        lines.append("No batch monitored yet.")
    return "\n".join(lines) + "\n"


def model_state(story: ModelStory) -> str:
    """One phrase for the model's state: no champion, canary under review, alert open, healthy."""
    champion = story.by_alias(CHAMPION)
    if champion is None:
        return "no champion yet"
    parts = [f"champion v{champion.version}"]
    if (canary := story.by_alias(CANARY)) is not None:
        parts.append(f"canary v{canary.version} under review")
    if (challenger := story.by_alias(CHALLENGER)) is not None:
        parts.append(f"challenger v{challenger.version} awaiting the gate")
    episode = story.ledger.episode
    if episode and episode.get("open"):
        parts.append(f"alert episode open since {episode.get('id')}")
    elif len(parts) == 1:
        parts.append("healthy")
    return ", ".join(parts)


def serving_table(story: ModelStory) -> list[str]:
    """Champion and canary: version, training data, gate metric, since when and why."""
    rows = []
    for alias in (CHAMPION, CANARY, CHALLENGER):
        version = story.by_alias(alias)
        if version is None:
            if alias != CHALLENGER:
                rows.append([alias, "-", "-", "-", "-", "none"])
            continue
        move = last_move_to(story.history, alias, version.version)
        rows.append(
            [
                alias,
                f"v{version.version}",
                training_data(version),
                gate_metric(version, story.metric),
                _short_time(move.time) if move else "-",
                (move.reason if move else "") or version.tags.get("evergreen.trigger.reason", "") or "-",
            ]
        )
    return table(["alias", "version", "trained on", f"{story.metric} at the gate", "since (UTC)", "why"], rows)


def training_data(version: VersionInfo) -> str:
    """`N rows up to <window end>, data <digest>` from the version's lineage tags."""
    tags = version.tags
    rows = tags.get("evergreen.dataset_rows")
    end = tags.get(state.WINDOW_END_TAG) or tags.get(state.TRAIN_END_TAG)
    digest = tags.get("evergreen.dataset_digest", "")
    parts = [f"{rows} rows" if rows else "", f"up to {_short_time(end)}" if end else "", f"data {digest[:12]}" if digest else ""]
    how = tags.get("evergreen.trigger")
    if how:
        parts.append(f"({how})")
    return " ".join(p for p in parts if p) or "-"


def gate_results(version: VersionInfo) -> dict[str, Any] | None:
    """The gate's results recorded on the version (None: never gated)."""
    raw = version.tags.get("evergreen.gate.results")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None  # cut at the tag's length limit: the summary stays in the passed tag


def gate_metric(version: VersionInfo, metric: str) -> str:
    """The version's metric as the gate measured it, vs the champion it was gated against."""
    results = gate_results(version)
    if results is None:
        return "not gated" if version.tags.get(state.BOOTSTRAP_TAG) != "true" else "bootstrap (not gated)"
    verdict = "gate " + ("passed" if results.get("passed") else "failed")
    for check in results.get("checks") or []:
        # The margin check's detail states both models' metric on the gate's rows.
        if check.get("name") in ("relative_margin", "floor") and check.get("detail"):
            return f"{verdict}: {check['detail']}"
    return verdict


def gate_checks_rows(results: dict[str, Any]) -> list[list[str]]:
    """The gate's checks as rows: check, passed, value, threshold, detail."""
    rows = [
        [str(c.get("name")), "yes" if c.get("passed") else "**no**", fmt(c.get("value")), fmt(c.get("threshold")), str(c.get("detail") or "")]
        for c in results.get("checks") or []
    ]
    rows += [["(skipped)", "-", "-", "-", str(s)] for s in results.get("skipped") or []]
    return rows


def episode_sentence(episode: dict[str, Any] | None) -> str:
    """The current (or last) alert episode in a sentence."""
    if not episode:
        return "No alert episode so far."
    kinds = " and ".join(episode.get("kinds") or []) or "alert"
    since = f"opened on batch {episode.get('id')}"
    change = f", change point {_short_time(episode.get('change_point'))}" if episode.get("change_point") else ""
    champ = f", champion then v{episode.get('champion')}" if episode.get("champion") else ""
    if episode.get("open"):
        asked = (
            f"; retrain requested with {episode.get('requested')} post-change labelled rows"
            if episode.get("requested") is not None
            else "; no retrain requested yet"
        )
        quiet = f"; {episode.get('quiet')} quiet batch(es) since the last alert" if episode.get("quiet") else ""
        effect = realized_effect(Episode.from_dict(episode)) if episode.get("realized") else None  # type: ignore[arg-type]
        if effect is not None and episode.get("settling_from") is None:
            side = "worse" if effect.worse_by > 0 else "better"
            quiet += (
                f"; the champion's realized metric on {effect.batches} post-change batch(es) is "
                f"{abs(effect.worse_by):.4f} {side} than its reference"
                + (f" (sampling error {effect.error:.4f})" if effect.error is not None else "")
            )
        if episode.get("settling_from") is not None:
            what = "refresh" if episode.get("refreshed") else "retrain"
            champ = f", settling: its {what} v{episode.get('champion')} replaced the champion with {episode.get('settling_from')} post-change labelled rows (a refresh follows as the labels grow)"
        return f"**Open** {kinds} episode, {since}{change}{champ}; last alert on {episode.get('last_alert')}{asked}{quiet}."
    why = f": {episode.get('closed_reason')}" if episode.get("closed_reason") else ""
    return f"No open episode. The last ({kinds}, {since}) is closed{why}."


def last_decisions(story: ModelStory, limit: int = LAST_DECISIONS) -> list[Decision]:
    """The loop's decisions, newest first: the monitor's retrain go/skip per batch (and its
    rejections), retrains registered, the gate, canary reviews, promotions and rollbacks."""
    rows = [d for r in story.ledger.batches.values() if (d := monitor_decision(r)) is not None]
    rows += [d for m in story.history if (d := move_decision(story, m)) is not None]
    return sorted(rows, key=lambda d: (d.time, d.subject), reverse=True)[:limit]


def monitor_decision(record: BatchRecord) -> Decision | None:
    """The monitor's verdict on a batch when it decided something (rejected, retrain, or a
    blocker held an alert's retrain); quiet batches are in the batches table only."""
    time = _short_time(record.processed_at)
    if not record.valid:
        return Decision(time, "monitor", f"batch {record.day}", "batch rejected", record.message)
    if record.decision == "retrain":
        return Decision(time, "monitor", f"batch {record.day}", "retrain: go", record.policy or "the policy asked for a retrain")
    if record.decision not in ("", "none", "no_alert") or record.events:
        decision = f"retrain: skip ({record.decision})" if record.decision not in ("", "none", "no_alert") else "alert"
        return Decision(time, "monitor", f"batch {record.day}", decision, record.policy or ", ".join(record.events))
    return None


def move_decision(story: ModelStory, move: AliasMove) -> Decision | None:
    """An alias move as a decision: registered, gate passed/failed, promoted, rolled back."""
    if move.state != "done":
        return None
    time, reason = _short_time(move.time), move.reason
    to = f"v{move.to_version}" if move.to_version else "-"
    if move.alias == CHALLENGER and move.to_version:
        version = story.version(move.to_version)
        data = training_data(version) if version is not None else ""
        return Decision(time, "retrain", to, "registered as challenger", "; ".join(p for p in (reason, data) if p))
    if move.alias == CHALLENGER and reason.startswith("gate failed"):
        return Decision(time, "promote", f"v{move.from_version}", "gate failed", reason.removeprefix("gate failed: "))
    if move.alias == CANARY and move.to_version:
        version = story.version(move.to_version)
        results = gate_results(version) if version is not None else None
        why = (results or {}).get("summary") or reason
        return Decision(time, "promote", to, "gate passed: canary", why)
    if move.alias == CANARY and reason.startswith("canary review"):
        return Decision(time, "canary-review", f"v{move.from_version}", "canary rejected", reason.removeprefix("canary review: "))
    if move.alias == CHAMPION:
        if reason.startswith("rollback"):
            return Decision(time, "rollback", f"v{move.from_version} -> {to}", "rolled back", reason.removeprefix("rollback: "))
        if reason.startswith("canary review"):
            return Decision(time, "canary-review", to, "promoted to champion", reason.removeprefix("canary review: "))
        return Decision(time, "registry", to, "champion", reason)
    return None


def last_batches(ledger: BatchLedger, limit: int = LAST_BATCHES) -> list[BatchRecord]:
    """The newest `limit` batch records, newest first."""
    return [ledger.batches[d] for d in sorted(ledger.batches, reverse=True)[:limit]]


def batch_row(record: BatchRecord) -> list[str]:
    alert = ", ".join(e.split(".", 1)[-1] for e in record.events) if record.events else ("drift" if record.drift_detected else "-")
    return [
        record.day,
        "yes" if record.valid else "**rejected**",
        fmt(record.estimated_metric),
        fmt(record.realized_metric) + (f" ({record.realized_on})" if record.realized_on and record.realized_metric is not None else ""),
        "-" if record.drift_share is None else f"{record.drift_share:.0%}",
        alert,
        record.decision or "-",
    ]


def fleet_row(block: str, story: ModelStory | None, problem: str = "") -> dict[str, str]:
    """One model of the fleet overview (`problem`: why its story could not be read)."""
    if story is None:
        return {"model": block, "state": f"unreadable: {problem}", "champion": "-", "canary": "-", "episode": "-", "last batch": "-", "last decision": "-"}
    champion, canary = story.by_alias(CHAMPION), story.by_alias(CANARY)
    recent = last_batches(story.ledger, 1)
    decisions = last_decisions(story, 1)
    episode = story.ledger.episode
    return {
        "model": block,
        "state": model_state(story),
        "champion": f"v{champion.version}" if champion else "-",
        "canary": f"v{canary.version}" if canary else "-",
        "episode": f"open since {episode.get('id')}" if episode and episode.get("open") else "-",
        "last batch": recent[0].day if recent else "-",
        "last decision": f"{decisions[0].step}: {decisions[0].decision} ({decisions[0].time})" if decisions else "-",
    }


def merge_fleet(previous: list[dict[str, Any]], registered: list[str], own: dict[str, str]) -> list[dict[str, str]]:
    """The fleet overview after one model's run: `own` (that model's fresh row) replaces its
    row in `previous` (the overview as it stood); every other registered model keeps the row
    its own last run wrote (or a placeholder until it runs); models no longer registered
    leave. A run reads one model, never the fleet: the cost of a run does not grow with the
    number of models."""
    rows = {str(r.get("model")): {k: str(v) for k, v in r.items()} for r in previous if isinstance(r, dict) and r.get("model")}
    rows[own["model"]] = own
    keep = [*registered, *([own["model"]] if own["model"] not in registered else [])]
    placeholder = {"state": "no run since the overview began", "champion": "-", "canary": "-", "episode": "-", "last batch": "-", "last decision": "-"}
    return [rows.get(name) or {"model": name, **placeholder} for name in sorted(keep)]


def history_markdown(model: str, moves: list[AliasMove]) -> str:
    """`evergreen history` as a table: time, alias, from, to, by, flow run, reason."""
    lines = [f"# {model}: alias history", ""]
    if not moves:
        return "\n".join([*lines, "No alias has moved yet."]) + "\n"
    rows = [
        [_short_time(m.time), m.alias, f"v{m.from_version}" if m.from_version else "-", f"v{m.to_version}" if m.to_version else "-",
         m.actor, m.flow_run_id or "-", m.reason + ("" if m.state == "done" else f" ({m.state})")]
        for m in reversed(moves)
    ]
    return "\n".join([*lines, "Newest first.", "", *table(["time (UTC)", "alias", "from", "to", "by", "flow run", "reason"], rows)]) + "\n"


def last_move_to(history: list[AliasMove], alias: str, version: str) -> AliasMove | None:
    """The move that brought `alias` to `version` (the newest such)."""
    return next((m for m in reversed(history) if m.alias == alias and m.to_version == version and m.state == "done"), None)


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; cells escaped for pipes and newlines."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(cell(h) for h in head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]


def fmt(value: Any, digits: int = 4) -> str:
    """A number for people: 4 significant decimals, `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _short_time(value: Any) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC as recorded)."""
    if value is None:
        return "-"
    text = str(value).replace("T", " ")
    return text[:19]


# ----------------------------------------------------------------------------- one run's page


def retrain_markdown(result: RetrainResult) -> str:
    """A retrain run's page: what it decided (registered, skipped and why, rejected), the
    version, its window, data and metrics."""
    title = {
        "registered": f"registered v{result.version}",
        "skipped": f"skipped ({result.blocked_by or 'blocked'})",
        "rejected": "training data rejected",
    }.get(result.status, result.status)
    trigger = result.trigger or {}
    lines = [f"# retrain · {result.model_name}: {title}", "", result.message or "", ""]
    facts = [
        ["trigger", " ".join(str(trigger.get(k)) for k in ("kind", "reason") if trigger.get(k)) or "-"],
        ["version", f"v{result.version}" if result.version else "-"],
        ["aliases", ", ".join(result.aliases) or "-"],
        ["training rows", str(result.rows) if result.rows else "-"],
        ["dataset digest", (result.dataset_digest or "-") + (" (reused)" if result.dataset_reused else "")],
        ["dataset", result.dataset_uri or "-"],
        ["MLflow run", result.run_id or "-"],
    ]
    if result.blocked_by:
        facts.insert(1, ["held by", result.blocked_by])
    lines += table(["what", "value"], facts)
    if result.metrics:
        lines += ["", "## Evaluation (held-out part of the window)", "", *table(["metric", "value"], [[k, fmt(v)] for k, v in sorted(result.metrics.items())])]
    if result.excluded:
        lines += ["", "## Left out of the window", "", *table(["file", "why"], [[k, v] for k, v in sorted(result.excluded.items())])]
    if result.sources:
        shown = result.sources[-10:]
        lines += ["", f"## Sources ({len(result.sources)} files; last {len(shown)})", "", *[f"- `{s}`" for s in shown]]
    return "\n".join(lines) + "\n"


def gate_markdown(result: PromotionResult, message: str) -> str:
    """A promote run's page: the gate's verdict and every check with its amounts."""
    checks = result.checks or {}
    version = result.challenger or checks.get("challenger_version")
    head = f"# promote · {result.model_name}: " + (f"v{version} {result.decision}" if version else result.decision)
    lines = [head, "", message, ""]
    if checks:
        against = f"v{checks.get('champion_version')}" if checks.get("champion_version") else "no champion (absolute checks only)"
        lines += [f"Gate on `{checks.get('metric')}` ({checks.get('mode')}) against {against}.", ""]
        lines += table(["check", "passed", "value", "threshold", "detail"], gate_checks_rows(checks))
    if result.reasons and result.decision != "passed":
        lines += ["", "## Why", "", *[f"- {r}" for r in result.reasons]]
    return "\n".join(lines) + "\n"


def canary_markdown(result: PromotionResult, message: str) -> str:
    """A canary-review run's page: the verdict, each arm's counts and metric, the gain and
    its interval, what evidence is still needed."""
    ev = result.checks or {}
    label = {"pending": "awaiting evidence", "promoted": "promoted", "rolled_back": "canary rejected"}.get(result.decision, result.decision)
    version = ev.get("canary_version") or result.canary
    lines = [f"# canary-review · {result.model_name}: " + (f"v{version} {label}" if version else label), "", message, ""]
    arms = [a for a in (ev.get("canary"), ev.get("champion")) if a]
    if arms:
        lines += table(
            ["arm", "version", "predictions served", "labelled", f"realized {ev.get('metric', '')}".strip(), "estimated", "mean prediction"],
            [[a.get("alias"), f"v{a.get('version')}", fmt(a.get("n_predictions")), fmt(a.get("n_labelled")),
              fmt(a.get("realized_metric")), fmt(a.get("estimated_metric")), fmt(a.get("mean_prediction"))] for a in arms],
        )
    if ev.get("gain") is not None:
        interval = (
            f" (interval {fmt(ev.get('gain_low'))} to {fmt(ev.get('gain_high'))})" if ev.get("gain_low") is not None else ""
        )
        lines += ["", f"Gain of the canary on {ev.get('basis') or ev.get('metric')}: {fmt(ev.get('gain'))}{interval}; margin {fmt(ev.get('margin'))}."]
    if needed := ev.get("needed"):
        lines += ["", "Still needed: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in needed.items() if v)]
    if result.reasons:
        lines += ["", "## Why", "", *[f"- {r}" for r in result.reasons]]
    return "\n".join(lines) + "\n"


def rollback_markdown(result: PromotionResult, message: str) -> str:
    """A rollback run's page: what changed (or why nothing did) and the reason."""
    label = {"rolled_back": f"champion now v{result.champion}", "unchanged": "nothing rolled back"}.get(result.decision, result.decision)
    lines = [f"# rollback · {result.model_name}: {label}", "", message, ""]
    if result.reasons:
        lines += ["## Reason", "", *[f"- {r}" for r in result.reasons]]
    return "\n".join(lines) + "\n"
