"""The shipped emulators (Lorenz-63: diffusion and stochastic interpolant, snapshot
intervals 0.1 and 0.5 each; Lorenz-96; Navier–Stokes 32²) are small, load with
``weights_only=True``, and match the true model of their interval within validation
thresholds: one-step energy distance, variance ratio and mean error, and (Lorenz) the
climatology of a free rollout."""

from __future__ import annotations

import pytest
import torch

from genfilter.emulators.validation import one_step_validation, rollout_validation
from genfilter.experiments.l63 import load_shipped_emulator, shipped_checkpoint
from genfilter.systems.lorenz63 import StochasticLorenz63


@pytest.mark.parametrize("interval", [0.1, 0.5])
def test_shipped_checkpoint_is_small_and_safe_to_load(interval):
    import json

    path = shipped_checkpoint(interval)
    assert path.stat().st_size < 600 * 1024
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["system"] == "lorenz63" and ckpt["train_state"] is None
    recorded = json.loads(ckpt["meta"].get("system_kwargs", "{}")).get("interval", 0.1)
    assert recorded == interval


@pytest.mark.parametrize("interval", [0.1, 0.5])
def test_shipped_emulator_matches_the_true_model(interval):
    """One step from 6 attractor states (128 samples each): energy distance below 0.02 in
    sd-normalised units (measured 0.0016 with 16 × 256; an emulator trained for one epoch
    scored 0.03 and variance ratio 2.4), variance ratio within [0.8, 1.25], mean error
    below 0.2 sd; a 150-step free rollout stays finite with the true climatology within
    0.25 sd in mean and 15 % in sd."""
    em = load_shipped_emulator(interval, steps=32)
    system = StochasticLorenz63(interval=interval)
    g = torch.Generator().manual_seed(0)
    states = system.attractor_states(8, generator=g)
    one = one_step_validation(em, system, states[:6], samples=128, generator=1)
    print(one)
    assert one.energy_distance < 0.02
    assert 0.8 < one.variance_ratio < 1.25
    assert one.mean_error < 0.2
    roll = rollout_validation(em, system, states, length=150, generator=2)
    assert roll.finite
    assert ((roll.mean_emulator - roll.mean_true).abs() < 0.25 * roll.std_true).all()
    assert ((roll.std_emulator / roll.std_true - 1).abs() < 0.15).all()


@pytest.mark.parametrize("interval", [0.1, 0.5])
def test_shipped_interpolant_matches_the_true_model(interval):
    """The interpolants of intervals 0.1 and 0.5 with their default 200 SDE steps (measured
    with 16 × 256: energy distance -0.0004 and 0.008; 0.005 and 0.035 with 64 steps): the
    same one-step thresholds as the diffusion emulators, on 6 states × 128 samples."""
    import json

    from genfilter.emulators import StochasticInterpolantEmulator

    path = shipped_checkpoint(interval, "interpolant")
    assert path.stat().st_size < 600 * 1024
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["family"] == "interpolant" and ckpt["train_state"] is None
    assert json.loads(ckpt["meta"]["system_kwargs"])["interval"] == interval
    em = load_shipped_emulator(interval, "interpolant")
    assert isinstance(em, StochasticInterpolantEmulator) and em.steps == 200
    system = StochasticLorenz63(interval=interval)
    states = system.attractor_states(6, generator=torch.Generator().manual_seed(0))
    one = one_step_validation(em, system, states, samples=128, generator=1)
    print(one)
    assert one.energy_distance < 0.02
    assert 0.8 < one.variance_ratio < 1.25
    assert one.mean_error < 0.2


def test_no_shipped_emulator_of_another_family_or_interval():
    with pytest.raises(FileNotFoundError, match="no shipped Lorenz-63 interpolant emulator"):
        shipped_checkpoint(0.25, "interpolant")
    with pytest.raises(ValueError, match="family must be one of"):
        shipped_checkpoint(0.5, "flow")


def test_config_selects_the_shipped_interpolant():
    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_twin_setup

    cfg = parse_config(
        {
            "setup": "l63-c",
            "emulator": "shipped-interpolant",
            "emulator_options": {"steps": 50, "diffusion": "sigma"},
            "filter": {"method": "fa-apf", "particles": 4},
        }
    )
    em = build_emulator(cfg, build_twin_setup(cfg))
    assert type(em).__name__ == "StochasticInterpolantEmulator" and em.steps == 50
    # a diffusion-only option is refused for the interpolant, naming the field
    with pytest.raises(ConfigError, match="emulator_options.sampler"):
        parse_config(
            {
                "setup": "l63-c",
                "emulator": "shipped-interpolant",
                "emulator_options": {"sampler": "xeab"},
                "filter": {"method": "fa-apf", "particles": 4},
            }
        )
    # interval 0.25 has none: the build says so in one line
    cfg_a = parse_config(
        {
            "setup": "l63-a",
            "system_options": {"interval": 0.25},
            "emulator": "shipped-interpolant",
            "filter": {"method": "bpf", "particles": 4},
        }
    )
    with pytest.raises(FileNotFoundError, match="interpolant emulator for the interval 0.25"):
        build_emulator(cfg_a, build_twin_setup(cfg_a))


def test_shipped_lorenz96_emulator_matches_the_true_model():
    """The shipped Lorenz-96 file (fp16, D = 40, F = 8, interval 0.05): loads with
    weights_only, records its system, and one step from 4 attractor states (64 samples) has
    a mean error below 0.02 and a spurious spread below 0.05 in units of the states' spread
    (measured 0.004 and an energy distance of 0.042 with 16 × 256; the true transition is
    deterministic); a 100-step free rollout of 8 trajectories keeps the climatology (averaged
    over the 40 components, which share it) within 0.1 sd in mean and 5 % in sd."""
    from genfilter.systems.lorenz96 import Lorenz96

    path = shipped_checkpoint(0.05, system="lorenz96")
    assert path.stat().st_size < 2 * 1024 * 1024
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["system"] == "lorenz96" and ckpt["train_state"] is None
    em = load_shipped_emulator(0.05, system="lorenz96", steps=32)
    system = Lorenz96()
    states = system.attractor_states(8, generator=torch.Generator().manual_seed(0))
    one = one_step_validation(em, system, states[:4], samples=64, generator=1)
    print(one)
    assert one.mean_error < 0.02
    assert one.energy_distance < 0.1
    roll = rollout_validation(em, system, states, length=100, generator=2)
    assert roll.finite
    # the 40 components share one climatology: compare the averages over components
    print(
        roll.mean_true.mean(),
        roll.mean_emulator.mean(),
        roll.std_true.mean(),
        roll.std_emulator.mean(),
    )
    assert (roll.mean_emulator.mean() - roll.mean_true.mean()).abs() < 0.1 * roll.std_true.mean()
    assert (roll.std_emulator.mean() / roll.std_true.mean() - 1).abs() < 0.05


def test_shipped_emulators_are_chosen_by_system_and_interval():
    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_twin_setup

    cfg = parse_config(
        {
            "setup": "l96-sparse",
            "emulator": "shipped",
            "filter": {"method": "fa-apf", "particles": 4},
        }
    )
    em = build_emulator(cfg, build_twin_setup(cfg))
    assert em.state_shape == (40,)
    with pytest.raises(
        FileNotFoundError,
        match=r"no shipped Lorenz-96 emulator for the interval 0\.15 \(shipped: 0\.05\)",
    ):
        shipped_checkpoint(0.15, system="lorenz96")
    with pytest.raises(
        ValueError, match="no shipped interpolant emulator for the system 'lorenz96'"
    ):
        shipped_checkpoint(0.05, "interpolant", system="lorenz96")
    with pytest.raises(ConfigError, match="no shipped-interpolant emulator for 'lorenz96'"):
        parse_config(
            {
                "setup": "l96-sparse",
                "emulator": "shipped-interpolant",
                "filter": {"method": "fa-apf", "particles": 4},
            }
        )


def test_shipped_navier_stokes_emulator_is_chosen_by_resolution_and_matches_the_true_model():
    """The shipped 32² Navier–Stokes emulator loads with ``weights_only=True``, records its
    system, is refused (naming both shapes) for a 64² config, and from one state near the
    attractor its 32 one-step draws (32 sampler steps) have the true model's total spread
    within 30 %, a mean within 0.5 true sd per grid point and an energy distance below 6
    (measured here: 1.02, 0.35 and 3.7; about 0.2 of the mean error is the sampling error of
    two 32-draw means. With 4 × 64 draws and 64 steps: 1.08, 0.20, 1.61 against a floor of
    0.044). An emulator whose normalisation or weights were wrong would be off by whole
    standard deviations."""
    import json

    from genfilter.experiments.config import ConfigError, parse_config
    from genfilter.experiments.runner import build_emulator, build_twin_setup
    from genfilter.systems.navier_stokes import NavierStokes2D

    path = shipped_checkpoint(0.5, system="ns2d")
    assert path.stat().st_size < 3 * 1024 * 1024
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["system"] == "ns2d" and ckpt["train_state"] is None
    assert json.loads(ckpt["meta"]["system_kwargs"])["resolution"] == 32

    raw = {
        "system": "ns2d",
        "emulator": "shipped",
        "observations": {"operator": "coarsen", "factor": 4, "noise_std": 0.115},
        "filter": {"method": "fa-apf", "particles": 4},
    }
    cfg = parse_config(
        {**raw, "system_options": {"resolution": 32}, "emulator_options": {"steps": 32}}
    )
    em = build_emulator(cfg, build_twin_setup(cfg))
    assert em.state_shape == (32, 32) and em.steps == 32
    cfg64 = parse_config(raw)
    with pytest.raises(ConfigError, match=r"ns2d-32\.pt.*\(32, 32\).*\(64, 64\)"):
        build_emulator(cfg64, build_twin_setup(cfg64))

    system = NavierStokes2D(resolution=32)
    g = torch.Generator().manual_seed(0)
    states = system.attractor_states(1, generator=g, burn_in=10.0)
    one = one_step_validation(em, system, states, samples=32, generator=1)
    print(one)
    assert 0.7 < one.total_variance_ratio < 1.3
    assert one.mean_error < 0.5
    assert one.energy_distance < 6.0
