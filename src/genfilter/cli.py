"""The ``genfilter`` command line (DESIGN.md, Command line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(
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
        except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def main(
    threads: int = typer.Option(
        None, envvar="GENFILTER_THREADS", min=1,
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
    particles: int = typer.Option(None, min=2, help="Ensemble size N (default 32, or 256 for linear-gaussian)."),
    steps: int = typer.Option(None, min=2, help="Assimilation steps (default 100, or 30)."),
    obs: str = typer.Option("a", help="Lorenz-63 observation setup: a (x1, x3) or b (x1)."),
    dim: int = typer.Option(8, min=2, help="State dimension D of the linear-Gaussian twin."),
    seed: int = typer.Option(0, min=0, help="Random seed (truth, observations and filters)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The main job: FA-APF vs BPF vs EnKF on stochastic Lorenz-63 with the shipped emulator
    (or, with --system linear-gaussian, against the exact Kalman filter)."""
    out.mkdir(parents=True, exist_ok=True)
    if system == "linear-gaussian":
        from .experiments.linear_gaussian import format_table, make_twin, plot_runs, run_filters

        particles, steps = particles or 256, steps or 30
        twin = make_twin(D=dim, observed=max(1, dim // 2), steps=steps, seed=seed)
        typer.echo(
            f"Linear-Gaussian twin: D = {dim}, {max(1, dim // 2)} observed components (noise std "
            f"0.5), {steps} steps, N = {particles}"
        )
        table, runs = run_filters(twin, particles=particles, seed=seed, progress=progress)
        figures = [plot_runs(twin, runs, out / "trajectories.png")]
        dims, burn = ["component"], 5
    elif system == "lorenz63":
        from .experiments.l63 import (
            SETUPS,
            format_table,
            load_shipped_emulator,
            plot_demo,
            run_demo,
            shipped_checkpoint,
        )

        particles, steps = particles or 32, steps or 100
        if obs not in SETUPS:
            raise ValueError(f"--obs must be one of {sorted(SETUPS)}, got {obs!r}")
        burn = 10 if steps > 20 else 0
        em = load_shipped_emulator()
        typer.echo(
            f"Stochastic Lorenz-63, setup ({obs}): {SETUPS[obs]['description']}; {steps} steps, "
            f"N = {particles}; every filter uses the shipped emulator {shipped_checkpoint().name}"
        )
        table, runs, twin = run_demo(em, particles=particles, cycles=steps, burn_in=burn,
                                     seed=seed, obs=obs, progress=progress)
        figures = plot_demo(twin, runs, out)
        dims = ["component"]
    else:
        raise ValueError(f"--system must be lorenz63 or linear-gaussian, got {system!r}")
    text = format_table(table)
    typer.echo(f"\nAverages over steps after a burn-in of {burn} (skill = RMSE of the ensemble mean):\n")
    typer.echo(text)
    (out / "table.md").write_text(text + "\n")
    (out / "table.json").write_text(json.dumps(table, indent=2))
    for name, run in runs.items():
        slug = "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
        run.to_xarray(state_dims=dims).to_netcdf(out / f"run_{slug}.nc", engine="h5netcdf")
    typer.echo(f"\nOutputs in {out}/: table.md, table.json, run_*.nc, "
               + ", ".join(f.name for f in figures))


@app.command()
@_clean_errors
def data(
    system: str = typer.Argument(..., help="lorenz63, lorenz96 or ns2d."),
    out: Path = typer.Option(None, help="Output folder (default data/<system>)."),
    trajectories: int = typer.Option(None, min=3, help="Number of trajectories (default per system)."),
    length: int = typer.Option(None, min=2, help="Snapshots kept per trajectory (default per system)."),
    burn_in: float = typer.Option(None, min=0.0, help="Burn-in in model time units."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    resolution: int = typer.Option(None, help="ns2d grid size (default 64)."),
    overwrite: bool = typer.Option(False, help="Discard a different dataset already in --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate (or resume generating) a dataset of trajectories with train/valid/test splits."""
    from .systems.datasets import SYSTEMS, DatasetSpec, describe, generate_dataset

    if system not in SYSTEMS:
        raise typer.BadParameter(f"unknown system {system!r}; choose from {sorted(SYSTEMS)}")
    kwargs = {"resolution": resolution} if resolution is not None and system == "ns2d" else {}
    spec = DatasetSpec(system, system_kwargs=kwargs, trajectories=trajectories, length=length,
                       burn_in=burn_in, seed=seed)
    out = out or Path("data") / system
    path = generate_dataset(spec, out, progress=progress, overwrite=overwrite)
    typer.echo(describe(path))
    typer.echo(f"Dataset written to {path}")


TRAIN_DEFAULTS = {
    # kind, residual (SPEC §2: on for fields, off for Lorenz), normalisation, network kwargs
    "lorenz63": dict(kind="mlp", residual=False, stats="per_component", net=dict(hidden=128, layers=6)),
    "lorenz96": dict(kind="mlp", residual=False, stats="per_component", net=dict(hidden=256, layers=6)),
    "ns2d": dict(kind="unet", residual=True, stats="scalar", net=dict()),
}


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
    resume: bool = typer.Option(True, help="Continue from --out if it exists."),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a diffusion emulator on a dataset made by `genfilter data` (SPEC §2)."""
    from .emulators.networks import denoiser_config
    from .emulators.training import TrainingConfig, train_emulator
    from .systems.datasets import SYSTEMS, consecutive_pairs, load_split

    if system not in TRAIN_DEFAULTS:
        raise typer.BadParameter(f"unknown system {system!r}; choose from {sorted(SYSTEMS)}")
    d = TRAIN_DEFAULTS[system]
    data_dir = data_dir or Path("data") / system
    if not (data_dir / "train.nc").exists():
        raise typer.BadParameter(f"no dataset in {data_dir}: run `genfilter data {system}` first")
    out = out or Path("checkpoints") / f"{system}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    train_ds = load_split(data_dir, "train")
    x_prev, x_next = consecutive_pairs(train_ds)
    valid = consecutive_pairs(load_split(data_dir, "valid"))
    net = dict(d["net"])
    if hidden is not None and d["kind"] == "mlp":
        net["hidden"] = hidden
    if quick and d["kind"] == "unet":
        net["quick"] = True
    cfg = denoiser_config(d["kind"], tuple(x_prev.shape[1:]), **net)
    tc = TrainingConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule="cosine",
                        seed=seed, device=device, checkpoint_every=max(1, epochs // 10))
    typer.echo(f"Training on {x_prev.shape[0]} pairs ({system}, {d['kind']}), "
               f"{valid[0].shape[0]} validation pairs -> {out}")
    result = train_emulator(x_prev, x_next, valid=valid, denoiser_config=cfg,
                            residual=d["residual"], stats=d["stats"], config=tc, out=out,
                            resume=resume, progress=progress)
    _annotate_checkpoint(out, system=system, system_kwargs=train_ds.attrs.get("system_kwargs", "{}"),
                         dataset=str(data_dir), command=" ".join(sys.argv))
    hist = result.history
    if hist.get("valid_loss"):
        typer.echo(f"validation loss: first {hist['valid_loss'][0]:.4f}, last {hist['valid_loss'][-1]:.4f}")
    typer.echo(f"Checkpoint written to {out}")


def _annotate_checkpoint(path: Path, **meta) -> None:
    """Records which system/dataset a checkpoint was trained on (in its ``meta``)."""
    import os

    import torch

    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    ckpt.setdefault("meta", {}).update(meta)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def _system_of_checkpoint(path: Path, system: str | None):
    import torch

    from .systems.datasets import make_system

    meta = torch.load(path, weights_only=True, map_location="cpu").get("meta", {})
    name = system or meta.get("system")
    if name is None:
        raise typer.BadParameter("the checkpoint does not record its system: pass --system")
    kwargs = json.loads(meta.get("system_kwargs", "{}")) if name == meta.get("system") else {}
    return name, make_system(name, **kwargs)


@app.command()
@_clean_errors
def validate(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False, help="Emulator checkpoint."),
    system: str = typer.Option(None, help="System (default: the one recorded in the checkpoint)."),
    states: int = typer.Option(16, min=1, help="Attractor states for the one-step check."),
    samples: int = typer.Option(256, min=2, help="Transitions per state."),
    rollout: int = typer.Option(500, min=0, help="Free-rollout length in snapshots (0: skip)."),
    rollout_members: int = typer.Option(16, min=1, help="Trajectories in the free rollout."),
    steps: int = typer.Option(64, min=1, help="Sampler steps."),
    sampler: str = typer.Option("xeab", help="Sampler name."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Compare an emulator with the true model: one-step energy distance (vs the noise floor
    of two independent true-model sample sets) and free-rollout climatology."""
    import torch

    from .emulators.training import load_emulator
    from .emulators.validation import one_step_validation, rollout_validation, validation_table

    name, sys_ = _system_of_checkpoint(checkpoint, system)
    em = load_emulator(checkpoint, steps=steps, sampler=sampler)
    g = torch.Generator().manual_seed(seed)
    x0 = sys_.attractor_states(max(states, rollout_members), generator=g)
    one = one_step_validation(em, sys_, x0[:states], samples=samples, generator=g)
    roll = None
    if rollout > 0:
        roll = rollout_validation(em, sys_, x0[:rollout_members], length=rollout, generator=g,
                                  progress=progress)
    typer.echo(f"Emulator {checkpoint} vs the true {name} model ({sampler}, {steps} steps):\n")
    typer.echo(validation_table(one, roll))




@app.command("filter")
@_clean_errors
def filter_(
    config: Path = typer.Argument(..., help="Experiment config (YAML; see configs/ and docs/experiments.md)."),
    method: str = typer.Option(None, help="Override filter.method: fa-apf, bpf, enkf, etkf, letkf, "
                                          "ensf, enff, flowdas or forecast (options reset)."),
    particles: int = typer.Option(None, min=2, help="Override filter.particles (N)."),
    steps: int = typer.Option(None, min=1, help="Override steps (assimilation cycles K)."),
    runs: int = typer.Option(None, min=1, help="Override runs (independent twins)."),
    seed: int = typer.Option(None, min=0, help="Override seed."),
    out: Path = typer.Option(None, help="Output netCDF file (default outputs/<name>-<method>-N<N>.nc)."),
    resume: bool = typer.Option(False, help="Continue an unfinished run of the same --out "
                                            "(bit-identical to an uninterrupted run)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Runs one filter on a twin-experiment config and writes a netCDF file."""
    from .experiments.config import load_config
    from .experiments.runner import run_config

    cfg = load_config(config, method=method, particles=particles, steps=steps, runs=runs, seed=seed)
    out = out or Path("outputs") / f"{cfg.name}-{cfg.filter.method}-N{cfg.filter.particles}.nc"
    typer.echo(f"{cfg.filter.method} on {cfg.name}: N = {cfg.filter.particles}, {cfg.steps} steps, "
               f"{cfg.runs} run(s), emulator {cfg.emulator}")
    path = run_config(cfg, out, resume=resume, progress=progress,
                      command="genfilter filter " + " ".join(sys.argv[2:]))
    from .experiments.reporting import summarize_file

    row = summarize_file(path)
    typer.echo("summary after burn-in (mean over runs): " + ", ".join(
        f"{m} {row[m]:.3f}" for m in ("skill", "spread", "ssr", "crps")))
    typer.echo(f"Output: {path}")


@app.command()
@_clean_errors
def experiment(
    name: str = typer.Argument(..., help="l63-table1 (paper Table 1) or l63-ensemble-size (Figure 1)."),
    quick: bool = typer.Option(False, "--quick", help="CPU scale, minutes (default)."),
    full: bool = typer.Option(False, "--full", help="Paper scale (10 runs × 100 steps; hours on 1 core)."),
    out: Path = typer.Option(None, help="Output folder (default outputs/<name>-<quick|full>)."),
    setup: str = typer.Option("ab", help="Observation setups to run: a, b or ab."),
    rows: str = typer.Option(None, help="Comma-separated subset of filters (default all)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Runs (or continues) a paper experiment; one netCDF file per cell, then results.md/csv
    and the figures of `genfilter report`."""
    from .experiments.l63_results import run_experiment
    from .experiments.reporting import report

    if quick and full:
        raise ValueError("choose one of --quick and --full")
    if not setup or set(setup) - {"a", "b"}:
        raise ValueError(f"--setup must be a, b or ab, got {setup!r}")
    scale = "full" if full else "quick"
    path = run_experiment(name, scale, out, rows=rows.split(",") if rows else None,
                          setups=tuple(sorted(set(setup))), progress=progress, echo=typer.echo)
    typer.echo((path / "results.md").read_text())
    written = report(path)
    typer.echo(f"Outputs in {path}/: results.md, results.csv, cells/*.nc, "
               + ", ".join(sorted({p.name for p in written})))


@app.command("report")
@_clean_errors
def report_(
    path: Path = typer.Argument(..., help="A run file (.nc) or a folder of them (an experiment's output)."),
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
    setup: str = typer.Option("ab", help="Lorenz-63 observation setups: a (x1, x3), b (x1) or ab."),
    covariance: str = typer.Option("tweedie,projected",
                                   help="Guidance covariances to compare (comma-separated)."),
    pairs: int = typer.Option(30, min=1, help="Number of (x^k, y) pairs."),
    samples: int = typer.Option(256, min=2, help="Proposal samples per pair."),
    draws: int = typer.Option(50_000, min=100, help="True-model draws per pair for the exact proposal."),
    seed: int = typer.Option(123, min=0, help="Random seed."),
    out: Path = typer.Option(None, help="Also write the markdown table to this file."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Compares the shipped Lorenz-63 emulator's MMPS proposal with the exact optimal
    proposal p(x^{k+1} | x^k, y), sampled by importance-weighting true-model draws (SPEC §4)."""
    from .experiments.proposal import format_study, l63_proposal_study

    if not setup or set(setup) - {"a", "b"}:
        raise ValueError(f"--setup must be a, b or ab, got {setup!r}")
    covs = tuple(c.strip() for c in covariance.split(",") if c.strip())
    for c in covs:
        if c not in ("tweedie", "projected"):
            raise ValueError(f"--covariance entries must be tweedie or projected, got {c!r}")
    res = l63_proposal_study(tuple(sorted(set(setup))), covs, pairs=pairs, samples=samples,
                             draws=draws, seed=seed, progress=progress)
    text = format_study(res)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        typer.echo(f"Table written to {out}")


if __name__ == "__main__":  # pragma: no cover
    app()
