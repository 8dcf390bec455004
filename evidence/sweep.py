"""semore-sweep: run a sweep spec's trials (tasks x arms x seeds) on Ray Tune, or locally.

    semore-sweep --spec sweeps/NAME.yaml --out sweeps-out/NAME [--address ADDR] [--resume]
                 [--backend ray | local]

Ray Tune schedules the trials (locally on this machine's cores by default; `--address` joins an
existing Ray cluster, where the output folder must be on storage every node sees). Each trial
asks for the spec's resources, a failed trial runs again up to `retries` times, and `--resume`
finishes an interrupted sweep: done trials are kept, the others continue from their last
checkpoint; a spec that adds seeds or arms resumes into the same folder. `--backend local` runs
the same spec without Ray, `max_concurrent` trials at a time.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from evidence.spec import SpecError, SweepSpec, Trial, load_spec
from evidence.trial import TrialFailed, TrialStopped, progress, read_state, run_trial, stop_all
from semore_runtime.options import CommandOptions, parse_command

TABLE_EVERY_SECONDS = 30.0


def progress_table(trials: list[Trial]) -> str:
    rows = [f"{'trial':<40} {'state':<8} {'frames':>8} {'return':>8}"]
    for trial in trials:
        frames, latest = progress(trial)
        shown = "-" if math.isnan(latest) else f"{latest:.0f}"
        rows.append(f"{trial.key:<40} {read_state(trial)['state']:<8} {frames:>8} {shown:>8}")
    return "\n".join(rows)


class TablePrinter(threading.Thread):
    """Prints the progress table now and then, and whenever a trial changes state."""

    def __init__(self, trials: list[Trial]) -> None:
        super().__init__(daemon=True)
        self.trials, self.stopped = trials, threading.Event()

    def run(self) -> None:
        last_states, last_print = None, 0.0
        while not self.stopped.wait(1.0):
            states = [read_state(t)["state"] for t in self.trials]
            if states != last_states or time.monotonic() - last_print > TABLE_EVERY_SECONDS:
                print(progress_table(self.trials) + "\n", flush=True)
                last_states, last_print = states, time.monotonic()


def run_local(trials: list[Trial], spec: SweepSpec) -> list[str]:
    """Each trial in its own processes, max_concurrent at a time; returns the keys that failed."""

    def attempt(trial: Trial) -> str | None:
        for _ in range(spec.retries + 1):
            try:
                run_trial(trial, spec)
                return None
            except TrialFailed as exc:
                print(f"{trial.key}: {exc}", flush=True)
        return trial.key

    with ThreadPoolExecutor(spec.max_concurrent) as pool:
        return [key for key in pool.map(attempt, trials) if key is not None]


def run_ray(trials: list[Trial], spec: SweepSpec, out: Path, address: str | None) -> list[str]:
    """Ray Tune schedules one function trial per sweep trial; returns the keys that failed."""
    import ray
    from ray import tune

    # A local cluster runs trials at normal priority: Ray's default niceness of 15 for workers
    # starved them whenever anything else ran (a tiny trial took 4 minutes instead of 1 here).
    local = {"_system_config": {"worker_niceness": 0}} if address is None else {}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **local)
    by_key = {t.key: t for t in trials}

    def trainable(config: dict) -> None:
        run_trial(by_key[config["trial"]], spec, report=tune.report)

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}),
        param_space={"trial": tune.grid_search(list(by_key))},
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str((out / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            verbose=0,
        ),
    )
    try:
        results = tuner.fit()
    finally:
        ray.shutdown()
    return [r.config["trial"] for r in results if r.error is not None]


class SweepOptions(CommandOptions):
    """Everything semore-sweep can be told; each field is one option."""

    spec: Path = Field(description="sweeps/NAME.yaml")
    out: Path = Field(description="output folder, e.g. sweeps-out/NAME")
    address: str | None = Field(
        None, description="an existing Ray cluster (ray start --head ...); default: local"
    )
    resume: bool = Field(False, description="finish an interrupted sweep in --out")
    backend: Literal["ray", "local"] = Field(
        "ray", description="Ray Tune, or trials as processes on this machine without Ray"
    )
    max_concurrent: int | None = Field(
        None,
        ge=1,
        description="trials at a time, in place of the spec's max_concurrent: a larger machine runs more "
        "at once, and what each trial measures stays the same",
    )
    seeds: list[int] | None = Field(
        None, description="run only these of the spec's seeds, to share one sweep between machines"
    )
    arms: list[str] | None = Field(
        None,
        description="run only these of the spec's arms, e.g. those a change to the learner leaves as they are",
    )

    @model_validator(mode="after")
    def _address_needs_ray(self) -> SweepOptions:
        if self.address and self.backend != "ray":
            raise ValueError("--address needs the ray backend")
        return self


def main(argv: list[str] | None = None) -> int:
    args = parse_command(SweepOptions, "semore-sweep", __doc__.splitlines()[0], argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"semore-sweep: {exc}", file=sys.stderr)
        return 2
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            print(
                "semore-sweep: Ray is not installed: pip install 'semore[sweep]', or use --backend local",
                file=sys.stderr,
            )
            return 2

    for option, chosen, known in (
        ("--seeds", args.seeds, spec.seeds),
        ("--arms", args.arms, list(spec.arms)),
    ):
        if chosen and (unknown := sorted(set(chosen) - set(known))):
            print(f"semore-sweep: {option}: {unknown} are not among the spec's {known}", file=sys.stderr)
            return 2

    stored = args.out / "sweep.json"
    resolved = spec.model_dump(mode="json")
    if stored.exists():
        if not args.resume:
            print(
                f"semore-sweep: {args.out} already holds a sweep: pass --resume to finish it", file=sys.stderr
            )
            return 2
        if not spec.extends(SweepSpec.model_validate_json(stored.read_text())):
            print(
                f"semore-sweep: {args.spec} changes more than seeds or arms of the sweep in {args.out}; "
                "use another --out",
                file=sys.stderr,
            )
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(resolved, indent=2) + "\n")

    if args.max_concurrent is not None:
        spec = spec.model_copy(update={"max_concurrent": args.max_concurrent})
    trials = spec.trials(args.out)
    trials = [
        t
        for t in trials
        if (not args.seeds or t.seed in args.seeds) and (not args.arms or t.arm in args.arms)
    ]
    pending = [t for t in trials if read_state(t)["state"] != "done"]
    print(
        f"{spec.name}: {len(trials)} trials, {len(trials) - len(pending)} done earlier, {args.backend} backend"
    )
    printer = TablePrinter(trials)
    printer.start()
    # SIGTERM (a time budget ran out, `timeout`, a scheduler) ends the trials' processes with the
    # sweep, instead of leaving them to train on; --resume continues from their checkpoints.
    signal.signal(signal.SIGTERM, lambda *_: stop_all())
    try:
        failed = run_ray(pending, spec, args.out, args.address) if args.backend == "ray" and pending else []
        if args.backend == "local":
            failed = run_local(pending, spec)
    except TrialStopped:
        print(progress_table(trials))
        print("semore-sweep: stopped; finish it with --resume", file=sys.stderr)
        return 124
    finally:
        printer.stopped.set()
        printer.join()
    print(progress_table(trials))
    if failed:
        print(
            f"semore-sweep: {len(failed)} trial(s) failed: {', '.join(failed)}; rerun with --resume",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(trials)} trials done; next: semore-report {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
