"""The ``genfilter`` command line: parses, calls the library, prints (README, Command line).

Every command prints where its outputs went.  Bad input and faults end with one line that
names the field or file and the cause, and exit code 2 (:func:`_clean_errors`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer depends on click
    import click


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) end with one line and exit
    code 2, like every other failure, instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx is not None else str(exc))
            sys.exit(0)
        except click.ClickException as exc:
            click.echo("error: " + " ".join(exc.format_message().split()), err=True)
            sys.exit(2)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except typer.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Bayesian filtering with generative emulators: FA-APF and baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _clean_errors(fn):
    """Bad input (ValueError, TypeError, FileNotFoundError) ends the command with its message
    and exit code 2 instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (
            ValueError,
            TypeError,
            FileNotFoundError,
            FileExistsError,
            FloatingPointError,
            PermissionError,
            IsADirectoryError,
            NotADirectoryError,
        ) as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            typer.echo(f"error: {text}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def main(
    threads: int = typer.Option(
        None,
        envvar="GENFILTER_THREADS",
        min=1,
        help="Torch CPU threads (default 1: on small shared machines more threads per process "
        "were measured to slow training down many-fold through oversubscription).",
    ),
) -> None:
    """genfilter command line."""
    import torch

    torch.set_num_threads(threads or 1)


@app.command()
@_clean_errors
def demo(
    system: str = typer.Option("lorenz63", help="lorenz63 (shipped emulator) or linear-gaussian."),
    out: Path = typer.Option(Path("outputs/demo"), help="Folder for the table, runs and figures."),
    particles: int = typer.Option(
        None, min=2, help="Ensemble size N (default 32, or 256 for linear-gaussian)."
    ),
    steps: int = typer.Option(None, min=2, help="Assimilation steps (default 100, or 30)."),
    obs: str = typer.Option(
        "c",
        help="Lorenz-63 observation setup: c (x1, x3 every 0.5; default), d (x1 every 0.5), "
        "a (x1, x3 every 0.1) or b (x1 every 0.1).",
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the twin (truth, observations) and filters."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The main job: FA-APF vs BPF vs EnKF on stochastic Lorenz-63 with the shipped emulator
    (or, with --system linear-gaussian, against the exact Kalman filter)."""
    from .experiments.demo import demo_configs, run_demo

    cfg = next(iter(demo_configs(system, obs, particles, steps, seed).values()))
    typer.echo(
        f"{cfg.name}: N = {cfg.filter.particles}, {cfg.steps} steps, emulator "
        f"{cfg.emulator}; rows written to {out}/"
    )
    table, written = run_demo(
        system,
        out,
        obs=obs,
        particles=particles,
        steps=steps,
        seed=seed,
        progress=progress,
    )
    typer.echo(
        f"\nAverages over steps after a burn-in of {cfg.burn_in} (skill = RMSE of the "
        "ensemble mean):\n"
    )
    typer.echo(table)
    typer.echo(f"\nOutputs in {out}/: " + ", ".join(sorted({p.name for p in written})))


@app.command()
@_clean_errors
def data(
    system: str = typer.Argument(..., help="lorenz63, lorenz96 or ns2d."),
    out: Path = typer.Option(None, help="Output folder (default data/<system>)."),
    trajectories: int = typer.Option(
        None, min=3, help="Number of trajectories (default per system)."
    ),
    length: int = typer.Option(
        None, min=2, help="Snapshots kept per trajectory (default per system)."
    ),
    burn_in: float = typer.Option(None, min=0.0, help="Burn-in in model time units."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    resolution: int = typer.Option(None, help="ns2d grid size (default 64)."),
    interval: float = typer.Option(
        None,
        min=0.0,
        help="Model time between snapshots (default per system, e.g. 0.1 for lorenz63).",
    ),
    overwrite: bool = typer.Option(False, help="Discard a different dataset already in --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate (or resume generating) a dataset of trajectories with train/valid/test splits."""
    from .systems.datasets import SYSTEMS, DatasetSpec, describe, generate_dataset

    if system not in SYSTEMS:
        raise typer.BadParameter(f"unknown system {system!r}; choose from {sorted(SYSTEMS)}")
    kwargs = {"resolution": resolution} if resolution is not None and system == "ns2d" else {}
    if interval is not None:
        kwargs["interval"] = interval
    spec = DatasetSpec(
        system,
        system_kwargs=kwargs,
        trajectories=trajectories,
        length=length,
        burn_in=burn_in,
        seed=seed,
    )
    out = out or Path("data") / system
    path = generate_dataset(spec, out, progress=progress, overwrite=overwrite)
    typer.echo(describe(path))
    typer.echo(f"Dataset written to {path}")


@app.command()
@_clean_errors
def train(
    system: str = typer.Argument(..., help="lorenz63, lorenz96 or ns2d."),
    data_dir: Path = typer.Option(None, "--data", help="Dataset folder (default data/<system>)."),
    out: Path = typer.Option(None, help="Checkpoint file (default checkpoints/<system>.pt)."),
    epochs: int = typer.Option(50, min=1, help="Training epochs."),
    batch_size: int = typer.Option(512, min=1, help="Pairs per step."),
    lr: float = typer.Option(1e-3, min=0.0, help="Peak AdamW learning rate (cosine decay)."),
    hidden: int = typer.Option(None, help="MLP width (default per system)."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    quick: bool = typer.Option(False, help="Small network (U-Net) for a CPU run in minutes."),
    channels: str = typer.Option(
        None,
        help="U-Net channels per depth, comma-separated, e.g. 16,32,64,128 (each depth "
        "halves the resolution; default per system, or 16,32 with --quick).",
    ),
    blocks: str = typer.Option(
        None, help="U-Net residual blocks per depth, comma-separated (default 2 per depth)."
    ),
    resume: bool = typer.Option(True, help="Continue from --out if it exists."),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    family: str = typer.Option(
        "diffusion",
        help="Emulator family: diffusion (a denoiser) or interpolant (the velocity of a "
        "stochastic interpolant; default --out checkpoints/<system>-interpolant.pt).",
    ),
    init: Path = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Fine-tune: start from this checkpoint's weights, keeping its architecture "
        "and normalisation.",
    ),
) -> None:
    """Train a diffusion (or stochastic-interpolant) emulator on a dataset made by
    `genfilter data` (docs/training.md)."""
    from .experiments.emulator_jobs import train_system

    result = train_system(
        system,
        data_dir,
        out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        hidden=hidden,
        seed=seed,
        quick=quick,
        channels=_int_list("--channels", channels) if channels is not None else None,
        blocks=_int_list("--blocks", blocks) if blocks is not None else None,
        resume=resume,
        device=device,
        progress=progress,
        family=family,
        init=init,
        command=" ".join(sys.argv),
        echo=typer.echo,
    )
    hist = result.history
    if hist.get("valid_loss"):
        typer.echo(
            f"validation loss: first {hist['valid_loss'][0]:.4f}, last {hist['valid_loss'][-1]:.4f}"
        )
    typer.echo(f"Checkpoint written to {result.checkpoint}")


@app.command()
@_clean_errors
def validate(
    checkpoint: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Emulator checkpoint."
    ),
    system: str = typer.Option(None, help="System (default: the one recorded in the checkpoint)."),
    states: int = typer.Option(16, min=1, help="Attractor states for the one-step check."),
    samples: int = typer.Option(256, min=2, help="Transitions per state."),
    rollout: int = typer.Option(500, min=0, help="Free-rollout length in snapshots (0: skip)."),
    rollout_members: int = typer.Option(16, min=1, help="Trajectories in the free rollout."),
    steps: int = typer.Option(64, min=1, help="Sampler steps."),
    sampler: str = typer.Option("xeab", help="Sampler name."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = typer.Option(
        "cpu", help="Torch device of the emulator and the true model (cpu, cuda)."
    ),
) -> None:
    """Compare an emulator with the true model: one-step energy distance (vs the noise floor
    of two independent true-model sample sets) and free-rollout climatology."""
    from .experiments.emulator_jobs import validate_checkpoint

    typer.echo(
        validate_checkpoint(
            checkpoint,
            system,
            states=states,
            samples=samples,
            rollout=rollout,
            rollout_members=rollout_members,
            steps=steps,
            sampler=sampler,
            seed=seed,
            progress=progress,
            device=device,
        )
    )


@app.command("filter")
@_clean_errors
def filter_(
    config: Path = typer.Argument(
        ..., help="Experiment config (YAML; see configs/ and docs/experiments.md)."
    ),
    method: str = typer.Option(
        None,
        help="Override filter.method: fa-apf, bpf, enkf, etkf, letkf, "
        "ensf, enff, flowdas or forecast (options reset).",
    ),
    particles: int = typer.Option(None, min=2, help="Override filter.particles (N)."),
    option: list[str] = typer.Option(
        None,
        "--option",
        help="Set one filter option, KEY=VALUE with a YAML value (repeatable), e.g. "
        "--option weights=gaussian --option ess_interval=null.",
    ),
    emulator_option: list[str] = typer.Option(
        None,
        "--emulator-option",
        help="Set one sampling option of the emulator, KEY=VALUE with a YAML value "
        "(repeatable), e.g. --emulator-option mean_sigma=0.3.",
    ),
    steps: int = typer.Option(None, min=1, help="Override steps (assimilation cycles K)."),
    burn_in: int = typer.Option(None, min=0, help="Override burn_in (cycles not scored)."),
    runs: int = typer.Option(None, min=1, help="Override runs (independent twins)."),
    seed: int = typer.Option(None, min=0, help="Override seed."),
    out: Path = typer.Option(
        None, help="Output netCDF file (default outputs/<name>-<method>-N<N>.nc)."
    ),
    resume: bool = typer.Option(
        False,
        help="Continue an unfinished run of the same --out "
        "(bit-identical to an uninterrupted run).",
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
    device: str = typer.Option(
        "cpu", help="Torch device of the emulator and the particles (cpu, cuda)."
    ),
) -> None:
    """Runs one filter on a twin-experiment config and writes a netCDF file.

    Under torchrun (`torchrun --nproc-per-node P genfilter filter cfg.yaml`) FA-APF and the
    BPF split the particles across the P processes; the file is bit-identical on CPU."""
    from ._utils import check_device
    from .distributed import init_from_env, is_main
    from .experiments.config import load_config
    from .experiments.runner import run_config

    check_device(device)
    init_from_env(device=device)
    echo = typer.echo if is_main() else (lambda *a, **k: None)

    cfg = load_config(
        config,
        method=method,
        particles=particles,
        steps=steps,
        burn_in=burn_in,
        runs=runs,
        seed=seed,
        options=_key_values("--option", option) if option else None,
        emulator_options=(
            _key_values("--emulator-option", emulator_option) if emulator_option else None
        ),
    )
    out = out or Path("outputs") / f"{cfg.name}-{cfg.filter.method}-N{cfg.filter.particles}.nc"
    echo(
        f"{cfg.filter.method} on {cfg.name}: N = {cfg.filter.particles}, {cfg.steps} steps, "
        f"{cfg.runs} run(s), emulator {cfg.emulator}"
    )
    path = run_config(
        cfg,
        out,
        resume=resume,
        progress=progress,
        command="genfilter filter " + " ".join(sys.argv[2:]),
        device=device,
    )
    if not is_main():
        return
    from .experiments.reporting import summarize_file

    row = summarize_file(path)
    echo(
        "summary after burn-in (mean over runs): "
        + ", ".join(f"{m} {row[m]:.3f}" for m in ("skill", "spread", "ssr", "crps"))
    )
    echo(f"Output: {path}")


@app.command()
@_clean_errors
def experiment(
    name: str = typer.Argument(
        ..., help="l63-table1 (paper Table 1) or l63-ensemble-size (Figure 1)."
    ),
    quick: bool = typer.Option(False, "--quick", help="CPU scale, minutes (default)."),
    full: bool = typer.Option(
        False, "--full", help="Paper scale (10 runs × 100 steps; hours on 1 core)."
    ),
    out: Path = typer.Option(None, help="Output folder (default outputs/<name>-<quick|full>)."),
    setup: str = typer.Option(
        "ab", help="Observation setups to run, letters among a, b (every 0.1), c, d (every 0.5)."
    ),
    rows: str = typer.Option(None, help="Comma-separated subset of filters (default all)."),
    sizes: str = typer.Option(
        None,
        help="Comma-separated ensemble sizes to run (default all; the Bayes limit runs only "
        "if its N, e.g. 100000, is named).",
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Runs (or continues) a paper experiment; one netCDF file per cell, then results.md/csv
    and the figures of `genfilter report`."""
    from .experiments.l63_results import run_experiment
    from .experiments.reporting import report

    if quick and full:
        raise ValueError("choose one of --quick and --full")
    if not setup or set(setup) - set("abcd"):
        raise ValueError(f"--setup must be letters among a, b, c, d (e.g. ab), got {setup!r}")
    scale = "full" if full else "quick"
    path = run_experiment(
        name,
        scale,
        out,
        rows=rows.split(",") if rows else None,
        setups=tuple(sorted(set(setup))),
        progress=progress,
        echo=typer.echo,
        sizes=_int_list("--sizes", sizes) if sizes else None,
    )
    typer.echo((path / "results.md").read_text())
    written = report(path)
    typer.echo(
        f"Outputs in {path}/: results.md, results.csv, cells/*.nc, "
        + ", ".join(sorted({p.name for p in written}))
    )


def _key_values(option: str, items: list[str]) -> dict:
    """``["weights=gaussian", "ess_interval=null"]`` -> a dict of YAML-parsed values, or a
    one-line error naming the option and the item."""
    import yaml

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"{option} {key.strip()}: {text!r} is not a YAML value") from None
    return out


def _setup_letters(setup: str) -> tuple[str, ...]:
    """``--setup`` of the Lorenz-63 diagnostics: letters among a, b, c, d, sorted."""
    if not setup or set(setup) - set("abcd"):
        raise ValueError(f"--setup must be letters among a, b, c, d, got {setup!r}")
    return tuple(sorted(set(setup)))


def _choices(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``, each among ``allowed``, or a one-line error naming the
    option and the bad entry."""
    items = tuple(v.strip() for v in text.split(",") if v.strip())
    if not items:
        raise ValueError(f"{option} must name at least one of {', '.join(allowed)}, got {text!r}")
    for v in items:
        if v not in allowed:
            raise ValueError(f"{option} entries must be among {', '.join(allowed)}, got {v!r}")
    return items


def _echo_table(text: str, out: Path | None) -> None:
    """Prints a markdown table, and writes it to ``out`` too when given."""
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        typer.echo(f"Table written to {out}")


def _int_list(option: str, text: str) -> list[int]:
    """``"16,64"`` -> ``[16, 64]``, or a one-line error naming the option."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None


@app.command()
@_clean_errors
def baselines(
    system: str = typer.Option(
        "lorenz63", help="lorenz63 (setup l63-det) or lorenz96 (setup l96)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Smoke run: 3 short runs, one short tuning twin."
    ),
    sizes: str = typer.Option(None, help="Comma-separated ensemble sizes (default per system)."),
    runs: int = typer.Option(None, min=1, help="Evaluation twins (default 10)."),
    cycles: int = typer.Option(None, min=2, help="Cycles per run (default 400)."),
    burn_in: int = typer.Option(None, min=0, help="Cycles not scored (default 100)."),
    filters: str = typer.Option(
        None, help="Comma-separated subset: BPF,EnKF,ETKF,LETKF,EnSF,EnFF."
    ),
    tune: bool = typer.Option(True, help="Tune every filter per N (--no-tune: stored values)."),
    show_tuning: bool = typer.Option(False, help="Print every tuning table."),
    out: Path = typer.Option(None, help="Also write the markdown here."),
    json_path: Path = typer.Option(None, "--json", help="Write every run's summary as JSON here."),
    from_json: Path = typer.Option(
        None, help="Print a table stored with --json instead of computing one."
    ),
    progress: bool = typer.Option(True, help="Progress lines on stderr."),
) -> None:
    """The baseline tables: every classical and score-based filter on the deterministic
    Lorenz-63 / Lorenz-96 twins with the true model, tuned, 10 runs (docs/baselines.md)."""
    from .experiments.baselines import run_baselines

    run_baselines(
        system,
        quick=quick,
        sizes=_int_list("--sizes", sizes) if sizes else None,
        runs=runs,
        cycles=cycles,
        burn_in=burn_in,
        filters=filters.split(",") if filters else None,
        tune=tune,
        show_tuning=show_tuning,
        out=out,
        json_path=json_path,
        from_json=from_json,
        progress=progress,
        echo=typer.echo,
    )


@app.command("report")
@_clean_errors
def report_(
    path: Path = typer.Argument(
        ..., help="A run file (.nc) or a folder of them (an experiment's output)."
    ),
) -> None:
    """Tables (markdown, CSV) and PNG figures from genfilter netCDF runs."""
    from .experiments.reporting import report

    written = report(path)
    typer.echo("Wrote:\n" + "\n".join(f"  {p}" for p in written))


diagnose_app = typer.Typer(help="Diagnostics of an emulator's components.", no_args_is_help=True)
app.add_typer(diagnose_app, name="diagnose")


@diagnose_app.command("proposal")
@_clean_errors
def diagnose_proposal(
    setup: str = typer.Option(
        "ab",
        help="Lorenz-63 observation setups, letters among a (x1, x3), b (x1) every 0.1 and "
        "c (x1, x3), d (x1) every 0.5.",
    ),
    covariance: str = typer.Option(
        "tweedie,projected",
        help="Guidance covariances to compare (comma-separated: tweedie, projected, observed).",
    ),
    pairs: int = typer.Option(30, min=1, help="Number of (x^k, y) pairs."),
    samples: int = typer.Option(256, min=2, help="Proposal samples per pair."),
    draws: int = typer.Option(
        50_000, min=100, help="True-model draws per pair for the exact proposal."
    ),
    seed: int = typer.Option(123, min=0, help="Random seed."),
    out: Path = typer.Option(None, help="Also write the markdown table to this file."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Compares the shipped Lorenz-63 emulator's MMPS proposal with the exact optimal
    proposal p(x^{k+1} | x^k, y), sampled by importance-weighting true-model draws (docs/method.md#optimal-proposal)."""
    from .experiments.proposal import format_study, l63_proposal_study

    res = l63_proposal_study(
        _setup_letters(setup),
        _choices("--covariance", covariance, ("tweedie", "projected", "observed")),
        pairs=pairs,
        samples=samples,
        draws=draws,
        seed=seed,
        progress=progress,
    )
    _echo_table(format_study(res), out)


@diagnose_app.command("weights")
@_clean_errors
def diagnose_weights(
    setup: str = typer.Option(
        "abcd",
        help="Lorenz-63 observation setups, letters among a (x1, x3), b (x1) every 0.1 and "
        "c (x1, x3), d (x1) every 0.5.",
    ),
    family: str = typer.Option(
        "diffusion",
        help="Shipped emulators to compare (comma-separated: diffusion, diffusion-fixed-point, "
        "interpolant).",
    ),
    pairs: int = typer.Option(30, min=1, help="Number of (x^k, y) pairs."),
    particles: int = typer.Option(64, min=2, help="Particles in the cloud around x^k."),
    draws: int = typer.Option(
        1000, min=1, help="True-model draws per particle for the exact weights."
    ),
    emulator_draws: int = typer.Option(
        256, min=1, help="Emulator draws per particle for the emulator's Monte-Carlo weights."
    ),
    seed: int = typer.Option(123, min=0, help="Random seed."),
    out: Path = typer.Option(None, help="Also write the markdown table to this file."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Compares FA-APF's dirac and gaussian weights, and the emulator's Monte-Carlo
    weights, with the exact weights of a particle cloud, estimated from true-model draws
    (docs/method.md#fa-apf-weights)."""
    from .experiments.weights_check import FAMILIES, format_weights_study, l63_weights_study

    res = l63_weights_study(
        _setup_letters(setup),
        _choices("--family", family, FAMILIES),
        pairs=pairs,
        particles=particles,
        draws=draws,
        emulator_draws=emulator_draws,
        seed=seed,
        progress=progress,
    )
    _echo_table(format_weights_study(res), out)


if __name__ == "__main__":  # pragma: no cover
    app()
