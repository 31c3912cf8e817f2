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


if __name__ == "__main__":  # pragma: no cover
    app()
