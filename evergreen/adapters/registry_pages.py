"""The registry as pages people read: a model version's description and the registered
model's description (its alias history), rendered from what the registry holds.

Pure functions from tags and history records to Markdown, which the MLflow UI renders on
the version's and the model's pages. `registry.Registry` writes them again whenever it
writes a version's tags (status, gate, canary, rejection) or moves an alias, so the pages
stay current. MLflow stores a description in at most 5,000 characters (its SQL column):
what matters most (status and its reasons) comes first and the rest is cut to fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# MLflow's `description` columns (registered model and model version) hold 5,000 characters.
DESCRIPTION_LIMIT = 5000
METRIC_TAG_PREFIX = "evergreen.metric."

_STATUS_SENTENCE = {
    "candidate": "candidate: registered as `challenger`, waiting for its validation gate",
    "canary": "canary: passed its gate and serves part of the traffic under review",
    "champion": "champion: serves the traffic",
    "retired": "retired: a former champion (a rollback target)",
    "rejected": "rejected: will not serve",
}


def describe_version(tags: Mapping[str, str], model: str, version: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The Markdown description of one model version, from its tags.

    Reads Evergreen's lineage and status tags: status, rejection and rollback reasons (in
    full), trigger, training window, alert episode, dataset digest, evaluation metrics
    (`evergreen.metric.*`), the gate's result and checks, the canary review's outcome and
    the Prefect flow run. Tags it does not find are left out; nothing here raises on a
    malformed tag (a truncated gate JSON reads as its summary)."""
    status = tags.get("evergreen.status") or "candidate"
    head = [f"### {model} v{version} — {status}", "", f"**Status**: {_STATUS_SENTENCE.get(status, status)}."]
    why = _reasons(tags)
    if why:
        head += ["", *why]
    rows = _facts(tags)
    table = ["", "| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows)] if rows else []
    gate = _gate_section(tags)
    tail = ["", "_Written by Evergreen from this version's tags; it changes when the status does._"]
    return _fit(head, [table, gate], tail, limit)


def describe_model(
    model: str,
    aliases: Mapping[str, str | None],
    moves: Sequence[Mapping[str, Any]],
    limit: int = DESCRIPTION_LIMIT,
) -> str:
    """The registered model's Markdown description: which version each alias points at
    and the alias history (`moves`: `AliasMove.to_dict()` records, oldest first), newest
    first, as many moves as fit; the full history is `evergreen history`."""
    now = " · ".join(f"`{a}` → {'v' + v if v else '—'}" for a, v in aliases.items())
    head = [
        f"### {model}",
        "",
        "Managed by Evergreen: versions are trained, gated, canaried and promoted by its flows; "
        "each version's page says why it has its status.",
        "",
        f"**Aliases now**: {now}" if now else "**Aliases now**: none",
        "",
        "#### Alias history (newest first)",
        "",
        "| time (UTC) | alias | from | to | by | reason |",
        "|---|---|---|---|---|---|",
    ]
    done = [m for m in moves if m.get("state", "done") == "done"]
    rows = [
        f"| {_time(m.get('time'))} | {m.get('alias', '')} | {_v(m.get('from_version'))} | "
        f"{_v(m.get('to_version'))} | {_cell(_actor(m))} | {_cell(str(m.get('reason', '')))} |"
        for m in reversed(done)
    ]
    if not rows:
        return "\n".join([*head, "| — | | | | | no alias has moved yet |"])
    out = list(head)
    size = len("\n".join(out))
    for shown, row in enumerate(rows):
        note = f"\n\n_{len(rows) - shown} older moves not shown: `evergreen history` lists them all._"
        if size + len(row) + 1 + len(note) > limit:
            out.append(note.strip("\n"))
            break
        out.append(row)
        size += len(row) + 1
    return "\n".join(out)


# ----------------------------------------------------------------------------- helpers


def _reasons(tags: Mapping[str, str]) -> list[str]:
    out = []
    if tags.get("evergreen.rejected.reasons"):
        out.append(f"**Why rejected**: {_text(tags['evergreen.rejected.reasons'])}")
    if tags.get("evergreen.rolled_back.reason"):
        out.append(f"**Why rolled back**: {_text(tags['evergreen.rolled_back.reason'])}")
    return out


def _facts(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    trigger = tags.get("evergreen.trigger")
    if trigger:
        detail = [tags[k] for k in ("evergreen.trigger.reason",) if tags.get(k)]
        if tags.get("evergreen.trigger.event_id"):
            detail.append(f"event `{tags['evergreen.trigger.event_id']}`")
        rows.append(("Trigger", trigger + (f" — {'; '.join(detail)}" if detail else "")))
    window = _window(tags)
    if window:
        rows.append(("Training window", window))
    if tags.get("evergreen.episode"):
        since = _time(tags.get("evergreen.change_point"))
        post = tags.get("evergreen.post_change_rows")
        rows.append(
            ("Alert episode", f"`{tags['evergreen.episode']}`, change at {since}" + (f", {_int(post)} post-change rows" if post else ""))
        )
    digest = tags.get("evergreen.dataset_digest")
    if digest:
        data = f"sha256 `{digest[:16]}…`"
        if tags.get("evergreen.dataset_rows"):
            data += f", {_int(tags['evergreen.dataset_rows'])} rows"
        if tags.get("evergreen.dataset_uri"):
            data += f", `{tags['evergreen.dataset_uri']}`"
        rows.append(("Training data", data))
    metrics = _metrics(tags)
    if metrics:
        rows.append(("Held-out metrics", metrics))
    gate = _gate(tags)
    if gate is not None:
        rows.append(("Gate", gate))
    canary = _canary(tags)
    if canary:
        rows.append(("Canary review", canary))
    url = tags.get("evergreen.prefect.flow_run_url")
    run_id = tags.get("evergreen.prefect.flow_run_id")
    if url:
        rows.append(("Prefect flow run", f"[{run_id or url}]({url})"))
    elif run_id:
        rows.append(("Prefect flow run", f"`{run_id}`"))
    if tags.get("evergreen.imported_from"):
        rows.append(("Imported from", f"`{tags['evergreen.imported_from']}`"))
    if tags.get("evergreen.code_version"):
        rows.append(("Code", f"`{tags['evergreen.code_version']}`"))
    return rows


def _window(tags: Mapping[str, str]) -> str:
    start, end = tags.get("evergreen.dataset_time_min"), tags.get("evergreen.window_end")
    train_end = tags.get("evergreen.train_end")
    if not (start or end or train_end):
        return ""
    text = f"{_time(start) if start else '…'} to {_time(end) if end else '…'}"
    if train_end and train_end != end:
        text += f" (trained on rows up to {_time(train_end)}; the newest rows held out)"
    return text


def _metrics(tags: Mapping[str, str]) -> str:
    values = {k[len(METRIC_TAG_PREFIX) :]: v for k, v in sorted(tags.items()) if k.startswith(METRIC_TAG_PREFIX)}
    rows = values.pop("n", None)
    text = ", ".join(f"{k} {_num(v)}" for k, v in values.items())
    return text + (f" on {_int(rows)} rows" if rows and text else "")


def _gate_results(tags: Mapping[str, str]) -> dict[str, Any] | None:
    raw = tags.get("evergreen.gate.results")
    if not raw:
        return None
    try:
        results = json.loads(raw)
    except ValueError:
        return None  # cut at the tag's length: the summary tag still says pass/fail
    return results if isinstance(results, dict) else None


def _gate(tags: Mapping[str, str]) -> str | None:
    passed = tags.get("evergreen.gate.passed")
    if passed is None:
        return None
    results = _gate_results(tags) or {}
    verdict = "**passed**" if passed == "true" else "**failed**"
    against = results.get("champion_version")
    text = verdict + (f" against champion v{against}" if against else "")
    if results.get("mode"):
        text += f" (mode {results['mode']})"
    return text


def _gate_section(tags: Mapping[str, str]) -> list[str]:
    results = _gate_results(tags)
    checks = (results or {}).get("checks") or []
    if not checks:
        return []
    lines = ["", "#### Gate checks", "", "| check | result | value | threshold | detail |", "|---|---|---|---|---|"]
    for c in checks:
        lines.append(
            f"| {c.get('name', '')} | {'pass' if c.get('passed') else '**fail**'} | {_num(c.get('value'))} | "
            f"{_num(c.get('threshold'))} | {_cell(str(c.get('detail', '')))} |"
        )
    for s in (results or {}).get("skipped") or []:
        lines.append(f"| {_cell(str(s).split(':')[0])} | skipped | | | {_cell(str(s))} |")
    return lines


def _canary(tags: Mapping[str, str]) -> str:
    outcome, reason = tags.get("evergreen.canary.outcome"), tags.get("evergreen.canary.reason")
    if not outcome:
        return ""
    return f"**{outcome}**" + (f" — {_text(reason)}" if reason else "")


def _fit(head: list[str], sections: list[list[str]], tail: list[str], limit: int) -> str:
    """Head (status and reasons) always, then each section while it fits, then the tail."""
    text = "\n".join(head)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    for section in sections:
        if not section:
            continue
        more = "\n".join(section)
        if len(text) + 1 + len(more) + 200 > limit:
            text += "\n\n_(cut to fit MLflow's description size: the version's tags hold the rest)_"
            break
        text += "\n" + more
    end = "\n".join(tail)
    return text + "\n" + end if len(text) + 1 + len(end) <= limit else text


def _text(value: str) -> str:
    return " ".join(str(value).split())


def _cell(value: str) -> str:
    """A table cell: one line, with the pipes that would end the cell escaped."""
    return _text(value).replace("|", "\\|")


def _time(value: Any) -> str:
    text = str(value or "")
    return text[:19].replace("T", " ") if text else "—"


def _v(version: Any) -> str:
    return f"v{version}" if version else "—"


def _actor(move: Mapping[str, Any]) -> str:
    actor = str(move.get("actor", ""))
    return actor


def _int(value: Any) -> str:
    try:
        return f"{int(float(value)):,}"
    except (TypeError, ValueError):
        return str(value)


def _num(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
