"""What every loop step shares: who acts, and the model's registry lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from evergreen.adapters.ports import Ports
from evergreen.loop.runner import Runner


@dataclass(frozen=True)
class Actor:
    """Who moves aliases and writes runs: the flow run (and deployment), or a replay."""

    name: str = "evergreen (manual run)"
    flow_run_id: str | None = None


MANUAL = Actor()


@contextmanager
def registry_lock(ports: Ports, actor: Actor, run: Runner) -> Iterator[list[str]]:
    """Hold the model's registry lock (alias writes are last-writer-wins); once held, finish
    whatever an interrupted earlier operation left (`registry.settle`). Yields what that did."""
    with ports.lock():
        fixed = ports.registry.settle(actor.name, actor.flow_run_id)
        if fixed:
            run.log(
                "finished an interrupted registry operation of %s: %s",
                ports.registry.name,
                "; ".join(fixed),
                level="warning",
            )
        yield fixed
