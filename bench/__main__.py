"""Run Evergreen's benchmarks: `python -m bench [monitor] [retrain] [--rows N] [--rounds R]
[--out FILE.json] [--markdown BENCHMARKS.md] [--profile DIR] [--keep]`.

Each benchmark measures a flow against its baseline in the same run: fresh processes,
alternating order, medians over the rounds, ratios flow/baseline. A temporary Prefect
server (SQLite, localhost) is started once for the flow variants and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import monitor_bench, retrain_bench
from bench.common import (
    DEFAULT_ROUNDS,
    DEFAULT_ROWS,
    DEFAULT_SEED,
    REPO_ROOT,
    Benchmark,
    BenchResult,
    Dataset,
    PrefectServer,
    child_env,
    format_table,
    load_results,
    measure,
    prefect_server,
    run_child,
    update_markdown,
)

BENCHMARKS: dict[str, Benchmark] = {
    monitor_bench.BENCHMARK.name: monitor_bench.BENCHMARK,
    retrain_bench.BENCHMARK.name: retrain_bench.BENCHMARK,
}


def run(
    names: list[str] | None = None,
    out: str | None = None,
    *,
    rows: int = DEFAULT_ROWS,
    rounds: int = DEFAULT_ROUNDS,
    markdown: str | None = None,
    profile: str | None = None,
    keep: bool = False,
    seed: int = DEFAULT_SEED,
    log: Callable[[str], None] = print,
) -> list[BenchResult]:
    """Run the named benchmarks (default: all), print a table and return the results.

    `out` writes the results as JSON; `markdown` updates each benchmark's generated
    section of that file (e.g. BENCHMARKS.md); `profile` also runs each variant once under
    cProfile and writes the .prof files and a summary into that directory; `keep` leaves
    the temporary data, stores and logs in place (their folder is printed).
    """
    started = time.perf_counter()
    selected = select(names)
    command = _command(selected, rows, rounds, out, markdown, profile, keep)
    workdir = Path(tempfile.mkdtemp(prefix="evergreen-bench-"))
    log(
        f"benchmarks {[b.name for b in selected]} on {rows:,} rows, {rounds} round(s); scratch {workdir}"
    )
    try:
        # The server starts while the data is written: neither is measured.
        with prefect_server(workdir / "prefect", wait=False) as server:
            dataset = prepare(workdir / "dataset", rows, seed, log)
            server.wait_healthy()
            log(f"Prefect server up at {server.api_url}")
            results = [
                measure(
                    b,
                    dataset,
                    workdir / "runs",
                    rounds=rounds,
                    server=server,
                    command=command,
                    log=log,
                )
                for b in selected
            ]
            if profile:
                for b in selected:
                    log(
                        profile_benchmark(
                            b, dataset, workdir / "profile", Path(profile), server
                        ).text
                    )
    finally:
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(format_table(results))
    log(f"total {time.perf_counter() - started:.0f} s")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(
            json.dumps([r.to_dict() for r in results], indent=2) + "\n", encoding="utf-8"
        )
    if markdown:
        update_markdown(Path(markdown), results)
    return results


def select(names: list[str] | None) -> list[Benchmark]:
    """The benchmarks named (all when None or empty); unknown names are an error naming them."""
    if not names:
        return list(BENCHMARKS.values())
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    return [BENCHMARKS[n] for n in dict.fromkeys(names)]


def prepare(root: Path, rows: int, seed: int, log: Callable[[str], None] = print) -> Dataset:
    """Write the benchmark stream in a child process (the harness stays small)."""
    log(f"writing a {rows:,}-row batch and its reference under {root} ...")
    result, seconds = run_child(
        "bench.common:prepare_dataset",
        {"root": str(root), "rows": rows, "seed": seed},
        root.parent / "prepare",
        child_env(None, None),
    )
    dataset = Dataset(**result["outcome"])
    log(
        f"data ready in {seconds:.0f} s: {dataset.rows:,} batch rows, {dataset.reference_rows:,} reference rows"
    )
    return dataset


@dataclass(frozen=True)
class ProfileReport:
    benchmark: str
    files: dict[str, str]
    text: str


def profile_benchmark(
    bench: Benchmark,
    dataset: Dataset,
    workdir: Path,
    out_dir: Path,
    server: PrefectServer,
    top: int = 30,
) -> ProfileReport:
    """Each variant once under cProfile: where the work's time goes, by cumulative time,
    for Evergreen's own functions (evergreen/, tasks/, flows/) and for Prefect's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(server.api_url, server.home)
    files, sections = {}, []
    for variant in (bench.baseline, bench.flow):
        prof = out_dir / f"{bench.name}-{variant.name}.prof"
        run_dir = workdir / f"{bench.name}-{variant.name}"
        result, _ = run_child(
            variant.function,
            bench.arguments(dataset, run_dir),
            run_dir,
            env,
            variant.preload,
            profile=str(prof),
        )
        files[variant.name] = str(prof)
        sections.append(
            f"== {bench.name} / {variant.name}: work {result['work_seconds']:.2f} s under cProfile ==\n"
            + cumulative_table(prof, ("evergreen/", "tasks/", "flows/", "bench/"), top)
            + "\n-- prefect --\n"
            + cumulative_table(prof, ("site-packages/prefect/",), 15)
        )
    text = "\n\n".join(sections)
    (out_dir / f"{bench.name}-profile.txt").write_text(text + "\n", encoding="utf-8")
    return ProfileReport(benchmark=bench.name, files=files, text=text)


def cumulative_table(prof: Path, path_parts: tuple[str, ...], top: int) -> str:
    """The `top` functions by cumulative time whose file path contains one of `path_parts`."""
    stats = pstats.Stats(str(prof))
    rows = []
    for (filename, line, func), (_cc, ncalls, _tt, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if any(p in filename for p in path_parts):
            short = filename.split("site-packages/")[-1].replace(str(REPO_ROOT) + "/", "")
            rows.append((cumtime, ncalls, f"{short}:{line}({func})"))
    rows.sort(reverse=True)
    return "\n".join(f"{c:9.2f} s {n:7d}x  {name}" for c, n, name in rows[:top])


def _command(
    selected: list[Benchmark],
    rows: int,
    rounds: int,
    out: str | None,
    markdown: str | None,
    profile: str | None,
    keep: bool = False,
) -> str:
    parts = ["uv run python -m bench", *(b.name for b in selected)]
    if rows != DEFAULT_ROWS:
        parts.append(f"--rows {rows}")
    if rounds != DEFAULT_ROUNDS:
        parts.append(f"--rounds {rounds}")
    if out:
        parts.append(f"--out {out}")
    if markdown:
        parts.append(f"--markdown {markdown}")
    if profile:
        parts.append(f"--profile {profile}")
    if keep:
        parts.append("--keep")
    return " ".join(parts)


# Benchmarks with their own command line (`python -m bench serving ...`), by module.
SEPARATE_COMMANDS = {
    "serving": "bench.serving_bench",
    "trigger": "bench.trigger_bench",
    "policy": "bench.policy_bench",
    "oneoff": "bench.oneoff_bench",
    "fleet": "bench.fleet_bench",
    "scale": "bench.scale_bench",
    "labels": "bench.labels_bench",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SEPARATE_COMMANDS:
        import importlib

        return int(importlib.import_module(SEPARATE_COMMANDS[argv[0]]).main(argv[1:]) or 0)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serving"]:
        # The scoring-service benchmark has its own options and no Prefect server.
        from bench import serving_bench

        return serving_bench.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {sorted(BENCHMARKS)})"
    )
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help="rows of the measured batch/window"
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="alternating rounds per benchmark"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument(
        "--markdown", help="update the generated sections of this file (e.g. BENCHMARKS.md)"
    )
    parser.add_argument("--profile", help="also profile each variant once; write .prof files here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and logs")
    parser.add_argument(
        "--from-json",
        help="measure nothing: print (and with --markdown, write) the results saved by --out",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        results = load_results(Path(args.from_json))
        print(format_table(results))
        if args.markdown:
            update_markdown(Path(args.markdown), results)
        return 0
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    try:
        select(args.names)
    except ValueError as exc:
        parser.error(str(exc))
    run(
        args.names,
        args.out,
        rows=args.rows,
        rounds=args.rounds,
        markdown=args.markdown,
        profile=args.profile,
        keep=args.keep,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
