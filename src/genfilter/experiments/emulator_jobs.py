r"""Training and validating an emulator of a registered system (``genfilter train`` and
``genfilter validate``): where the systems' data (:mod:`genfilter.systems.datasets`) meet
the emulators' training loop (:mod:`genfilter.emulators.training`).

The defaults of each system (backbone, residual target, normalisation) live in its registry
entry (``SYSTEMS[name].training``); docs/training.md gives the measured runs.
"""

from __future__ import annotations

__all__ = ["train_system", "validate_checkpoint"]

import json
from pathlib import Path


def train_system(
    system: str,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    epochs: int = 50,
    batch_size: int = 512,
    lr: float = 1e-3,
    hidden: int | None = None,
    seed: int = 0,
    quick: bool = False,
    channels: list[int] | None = None,
    blocks: list[int] | None = None,
    resume: bool = True,
    device: str = "cpu",
    progress: bool = True,
    family: str = "diffusion",
    init: str | Path | None = None,
    command: str = "",
    echo=print,
):
    """Trains an emulator of ``system`` on a dataset made by ``genfilter data`` and records
    the system in the checkpoint; returns the
    :class:`~genfilter.emulators.training.TrainResult`.

    ``family``: ``"diffusion"`` (a denoiser; default checkpoint ``checkpoints/<system>.pt``)
    or ``"interpolant"`` (the velocity of a stochastic interpolant, same backbone; default
    checkpoint ``checkpoints/<system>-interpolant.pt``).

    ``channels``, ``blocks``: the U-Net's channels and residual blocks per depth (U-Net
    systems only, not with ``quick``; ``blocks`` defaults to 2 per depth); the flags are
    checked before the dataset is read, the architecture by
    :func:`~genfilter.emulators.networks.denoiser_config`.

    ``init``: a checkpoint of the same system and family to fine-tune (its architecture and
    normalisation are kept, so ``hidden``, ``quick``, ``channels`` and ``blocks`` must be
    left out; :func:`~genfilter.emulators.training.train_emulator`)."""
    from ..emulators.interpolant import velocity_config
    from ..emulators.networks import denoiser_config
    from ..emulators.training import (
        FAMILIES,
        TrainingConfig,
        annotate_checkpoint,
        load_checkpoint,
        train_emulator,
    )
    from ..systems.datasets import SYSTEMS, consecutive_pairs, load_split

    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {sorted(SYSTEMS)}, got {system!r}")
    if family not in FAMILIES:
        raise ValueError(f"--family must be one of {list(FAMILIES)}, got {family!r}")
    d = SYSTEMS[system].training
    net = dict(d["net"])
    if hidden is not None and d["kind"] == "mlp":
        net["hidden"] = hidden
    if quick and d["kind"] == "unet":
        net["quick"] = True
    for flag, value, key in (
        ("--channels", channels, "hidden_channels"),
        ("--blocks", blocks, "hidden_blocks"),
    ):
        if value is None:
            continue
        if d["kind"] != "unet":
            raise ValueError(f"{flag} applies to U-Net systems (ns2d), not {system}")
        if quick:
            raise ValueError(f"{flag} and --quick exclude each other (--quick fixes the U-Net)")
        net[key] = list(value)
    if "hidden_blocks" in net and "hidden_channels" not in net:
        raise ValueError("--blocks needs --channels (one block count per depth)")
    if "hidden_blocks" in net and len(net["hidden_blocks"]) != len(net["hidden_channels"]):
        raise ValueError(
            f"--blocks {net['hidden_blocks']} needs one count per depth of --channels "
            f"{net['hidden_channels']}"
        )
    start = None
    if init is not None:
        given = [
            flag
            for flag, value in (
                ("--hidden", hidden),
                ("--quick", quick or None),
                ("--channels", channels),
                ("--blocks", blocks),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} and --init exclude each other (the architecture is the "
                f"checkpoint's)"
            )
        start = load_checkpoint(init)
        recorded = start.get("meta", {}).get("system")
        if recorded is not None and recorded != system:
            raise ValueError(f"--init {init} emulates {recorded!r}, not {system!r}")
    data_dir = Path(data_dir) if data_dir is not None else Path("data") / system
    if not (data_dir / "train.nc").exists():
        raise FileNotFoundError(f"no dataset in {data_dir}: run `genfilter data {system}` first")
    suffix = "" if family == "diffusion" else f"-{family}"
    out = Path(out) if out is not None else Path("checkpoints") / f"{system}{suffix}.pt"
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder, not a checkpoint file")
    train_ds = load_split(data_dir, "train")
    x_prev, x_next = consecutive_pairs(train_ds)
    valid = consecutive_pairs(load_split(data_dir, "valid"))
    make_config = denoiser_config if family == "diffusion" else velocity_config
    cfg = (
        make_config(d["kind"], tuple(x_prev.shape[1:]), **net)
        if start is None
        else start["denoiser_config"]
    )
    tc = TrainingConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule="cosine",
        seed=seed,
        device=device,
        checkpoint_every=max(1, epochs // 10),
    )
    echo(
        f"Training on {x_prev.shape[0]} pairs ({system}, {family}, {d['kind']}), "
        f"{valid[0].shape[0]} validation pairs -> {out}"
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out} cannot be written: {exc.strerror or exc}") from None
    result = train_emulator(
        x_prev,
        x_next,
        valid=valid,
        denoiser_config=cfg,
        residual=d["residual"],
        stats=d["stats"],
        config=tc,
        out=out,
        resume=resume,
        progress=progress,
        family=family,
        init=init,
    )
    annotate_checkpoint(
        out,
        system=system,
        system_kwargs=train_ds.attrs.get("system_kwargs", "{}"),
        dataset=str(data_dir),
        command=command,
    )
    return result


def validate_checkpoint(
    checkpoint: str | Path,
    system: str | None = None,
    *,
    states: int = 16,
    samples: int = 256,
    rollout: int = 500,
    rollout_members: int = 16,
    steps: int = 64,
    sampler: str = "xeab",
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
) -> str:
    """Compares an emulator with the true model of the system it was trained for (or
    ``system``): the one-step energy distance against the noise floor of two true-model
    sample sets, and a free-rollout climatology.  Returns the markdown table.

    ``device``: where the emulator samples and the true model integrates (the attractor
    states are burnt in on the CPU and moved there; the random numbers are drawn on the CPU
    generator whatever the device)."""
    import torch

    from .._utils import check_device
    from ..emulators.training import (
        checkpoint_family,
        checkpoint_system,
        load_checkpoint,
        load_emulator,
    )
    from ..emulators.validation import one_step_validation, rollout_validation, validation_table
    from ..systems.datasets import SYSTEMS, make_system

    recorded, kwargs = checkpoint_system(checkpoint)
    name = system or recorded
    if name is None:
        raise ValueError(f"{Path(checkpoint).name} does not record its system: pass --system")
    if name not in SYSTEMS:
        raise ValueError(f"--system must be one of {sorted(SYSTEMS)}, got {name!r}")
    sys_ = make_system(name, **(kwargs if name == recorded else {}))
    check_device(device)
    # the sampler is the diffusion family's; an interpolant integrates its own SDE
    diffusion = checkpoint_family(load_checkpoint(checkpoint)) == "diffusion"
    options = {"sampler": sampler} if diffusion else {}
    em = load_emulator(checkpoint, steps=steps, map_location=device, **options)
    if tuple(em.state_shape) != tuple(sys_.state_shape):
        raise ValueError(
            f"{Path(checkpoint).name} emulates states of shape {tuple(em.state_shape)}, but "
            f"{name} has {tuple(sys_.state_shape)}"
            + (f" (it was trained for {recorded})" if recorded and recorded != name else "")
        )
    g = torch.Generator().manual_seed(seed)
    x0 = sys_.attractor_states(max(states, rollout_members), generator=g).to(device)
    one = one_step_validation(em, sys_, x0[:states], samples=samples, generator=g)
    roll = None
    if rollout > 0:
        roll = rollout_validation(
            em, sys_, x0[:rollout_members], length=rollout, generator=g, progress=progress
        )
    head = (
        f"Emulator {checkpoint} vs the true {name} model "
        f"({sampler if diffusion else 'interpolant SDE'}, {steps} steps; "
        f"system options {json.dumps(kwargs) if name == recorded else '{}'}):\n\n"
    )
    return head + validation_table(one, roll)
