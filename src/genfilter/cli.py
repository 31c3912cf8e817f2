"""The ``genfilter`` command line (DESIGN.md, Command line)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Bayesian filtering with generative emulators: FA-APF and baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """genfilter command line."""


@app.command()
def demo(
    out: Path = typer.Option(Path("outputs/demo"), help="Folder for the table, runs and figure."),
    particles: int = typer.Option(256, min=2, help="Ensemble size N."),
    steps: int = typer.Option(30, min=1, help="Number of assimilation steps."),
    dim: int = typer.Option(8, min=2, help="State dimension D."),
    seed: int = typer.Option(0, min=0, help="Random seed (truth, observations and filters)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Linear-Gaussian twin experiment: FA-APF vs BPF vs EnKF against the exact Kalman filter."""
    import torch

    from .experiments.linear_gaussian import format_table, make_twin, plot_runs, run_filters

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    twin = make_twin(D=dim, observed=max(1, dim // 2), steps=steps, seed=seed)
    typer.echo(
        f"Linear-Gaussian twin: D = {dim}, {max(1, dim // 2)} observed components (noise std 0.5), "
        f"{steps} steps, N = {particles}"
    )
    table, runs = run_filters(twin, particles=particles, seed=seed, progress=progress)
    text = format_table(table)
    typer.echo("\nAverages over steps after a burn-in of 5 (skill = RMSE of the ensemble mean):\n")
    typer.echo(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "table.json").write_text(json.dumps(table, indent=2))
    for name, run in runs.items():
        slug = name.lower().replace(" ", "_").replace("(", "").replace(")", "").replace("-", "")
        run.to_xarray(state_dims=["component"]).to_netcdf(out / f"run_{slug}.nc", engine="h5netcdf")
    fig = plot_runs(twin, runs, out / "trajectories.png")
    typer.echo(f"\nOutputs: {out}/table.md, table.json, run_*.nc, {fig.name}")


@app.command()
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


if __name__ == "__main__":  # pragma: no cover
    app()
