"""Particles across processes (genfilter.distributed): two gloo processes on CPU give the
single-process run bit for bit (FA-APF and the BPF, run file included), uneven blocks,
exact weights, a stochastic sampler and resume included; the noise of a block is the
one-process noise of its rows; network rows do not depend on the batch size."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genfilter._utils import make_generator
from genfilter.distributed import MIN_PARTICLES_PER_PROCESS, _ShardedNoise
from genfilter.experiments.config import load_config, parse_config
from genfilter.experiments.runner import (
    build_emulator,
    build_filter,
    build_twin_setup,
    run_config,
    run_seed,
)
from genfilter.experiments.twin import make_twin
from genfilter.filters.base import assimilate
from genfilter.io import open_run

ROOT = Path(__file__).resolve().parents[1]

# A tiny Lorenz-63 setup (a): the shipped emulator with 8 diffusion steps, 3 cycles, a
# short spin-up of the truth; every particle starts at the true initial state.
CONFIG = {
    "name": "dist",
    "setup": "l63-a",
    "emulator": "shipped",
    "emulator_options": {"steps": 8},
    "initial": {"recipe": "perturbed", "std": 0.0, "spinup": 0.5},
    "filter": {"method": "fa-apf", "particles": 32},
    "steps": 3,
    "burn_in": 1,
    "runs": 1,
    "seed": 3,
    "save": "particles",
}


def _config(**changes):
    """CONFIG with changes; ``method``, ``particles`` and ``options`` go to ``filter``."""
    d = yaml.safe_load(yaml.safe_dump(CONFIG))
    for key, value in changes.items():
        (d["filter"] if key in ("method", "particles", "options") else d)[key] = value
    return d


# The scenarios run through assimilate directly (same code in the workers and here).
SCENARIO = textwrap.dedent(
    """
    import torch
    from genfilter._utils import make_generator
    from genfilter.experiments.config import parse_config
    from genfilter.experiments.runner import build_emulator, build_filter, build_twin_setup
    from genfilter.experiments.runner import run_seed
    from genfilter.experiments.twin import make_twin
    from genfilter.filters.base import assimilate

    def scenario(cfg_dict, steps=None, checkpoint=None, distributed=None):
        cfg = parse_config(cfg_dict)
        setup = build_twin_setup(cfg)
        em = build_emulator(cfg, setup)
        twin_seed, filter_seed = run_seed(cfg, 0)
        twin = make_twin(setup, twin_seed)
        filt = build_filter(cfg, em, setup, make_generator(filter_seed))
        K = steps or len(twin.observations)
        run = assimilate(
            filt, twin.initial_ensemble(cfg.filter.particles), twin.observations[:K],
            truth=twin.truth[:K], progress=False, checkpoint=checkpoint,
            distributed=distributed,
        )
        return {
            "moved": getattr(distributed, "moved", None),
            "particles": run.particles, "log_weights": run.log_weights,
            "metrics": run.metrics, "generator": filt.generator.get_state(),
            "infos": [
                (i.ess, i.inflation, i.log_evidence, i.ess_untempered, i.target_met,
                 i.bisection_iterations, i.unique_ancestors, i.resampled)
                for i in run.infos
            ],
        }
    """
)

WORKER = SCENARIO + textwrap.dedent(
    """
    import json, shutil, sys
    from pathlib import Path
    from genfilter.distributed import ParticleShards, init_from_env, is_main, rank
    from genfilter.experiments.runner import run_config

    torch.set_num_threads(1)
    assert init_from_env()
    out = Path(sys.argv[1])
    jobs = json.loads((out / "jobs.json").read_text())
    results = {}
    for name, cfg in jobs["run_config"].items():
        run_config(parse_config(cfg), out / f"{name}.nc", progress=False)
    for name, cfg in jobs["assimilate"].items():
        results[name] = scenario(cfg, distributed=ParticleShards(cfg["filter"]["particles"]))
    # resume: 2 of 3 steps, keep that checkpoint, then continue in two processes
    ckpt = out / "resume.pt"
    scenario(jobs["resume"], steps=2, checkpoint=ckpt)
    if is_main():
        shutil.copy(ckpt, out / "resume-2steps.pt")
    results["resumed"] = scenario(jobs["resume"], checkpoint=ckpt)
    try:
        ParticleShards(2 * 16 - 1)
    except ValueError as exc:
        results["too_few"] = str(exc)
    if is_main():
        torch.save(results, out / "results.pt")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _launch(script: Path, arg: Path, nproc: int = 2, timeout: float = 240) -> None:
    """Runs ``nproc`` ranks of ``script`` (the environment torchrun would set)."""
    env = _env()
    env["MASTER_PORT"] = str(_free_port())
    procs = []
    for r in range(nproc):
        e = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(arg)],
                env=e,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text[-4000:]


def _assert_same_run(a: dict, b: dict) -> None:
    """Bitwise equality of two scenario results (``seconds`` is not recorded)."""
    assert torch.equal(a["particles"], b["particles"])
    assert torch.equal(a["log_weights"], b["log_weights"])
    assert a["metrics"].keys() == b["metrics"].keys()
    for key in a["metrics"]:
        assert torch.equal(a["metrics"][key], b["metrics"][key]), key
    assert a["infos"] == b["infos"]  # floats compared exactly
    assert len(a["infos"]) == CONFIG["steps"]
    assert torch.equal(a["generator"], b["generator"])


def _assert_same_file(single: Path, multi: Path) -> None:
    with open_run(single) as a, open_run(multi) as b:
        assert set(a.data_vars) == set(b.data_vars)
        compared = 0
        for name in a.data_vars:
            if name == "seconds" or name.endswith("_seconds"):
                continue
            x, y = a[name].values, b[name].values
            if x.dtype.kind == "f":
                assert np.array_equal(x, y, equal_nan=True), name
                compared += 1
            else:
                assert np.array_equal(x, y), name
        assert compared > 5 and "particles" in a.data_vars
        assert int(b.attrs["processes"]) == 2 and int(a.attrs["processes"]) == 1


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One launch of two gloo ranks that runs every multi-process job of this file."""
    out = tmp_path_factory.mktemp("dist")
    jobs = {
        "run_config": {
            "fa-apf": _config(method="fa-apf"),
            "bpf": _config(method="bpf"),
        },
        "assimilate": {
            # uneven blocks (18 + 17), exact weights (2 forecasts per particle drawn in
            # one call of 2 n rows), stratified resampling, a stochastic sampler (noise
            # drawn inside azula through the emulator's own noise interception)
            "uneven": _config(
                particles=35,
                initial={"recipe": "perturbed", "std": 1.0, "spinup": 0.5},
                emulator_options={"steps": 6, "sampler": "ddpm"},
                options={"weights": "exact", "exact_samples": 2, "resampling": "stratified"},
            ),
            # FA-APF with model noise: the conditional draw of the jittered proposal and
            # its observation noise are per-particle draws of the filter's generator
            "fa-apf-model-noise": _config(options={"jitter": 0.3}),
            # pooled weights: one forecast per particle, the squared residuals gathered
            # from both ranks before their mean
            "pooled": _config(
                initial={"recipe": "perturbed", "std": 1.0, "spinup": 0.5},
                options={"weights": "pooled"},
            ),
            # the true model (torchsde) as the BPF's forecast, resampling at every step
            "bpf-true": _config(
                method="bpf",
                emulator="true",
                emulator_options={},
                options={"resample_threshold": 1.0},
            ),
        },
        "resume": _config(method="fa-apf"),
    }
    (out / "jobs.json").write_text(__import__("json").dumps(jobs))
    script = out / "worker.py"
    script.write_text(WORKER)
    _launch(script, out)
    return out, jobs, torch.load(out / "results.pt", weights_only=False)


def _single(cfg: dict, **kwargs) -> dict:
    namespace: dict = {}
    exec(SCENARIO, namespace)
    torch.set_num_threads(1)
    return namespace["scenario"](cfg, **kwargs)


@pytest.mark.parametrize("method", ["fa-apf", "bpf"])
def test_two_gloo_processes_write_the_single_process_run_file(two_processes, method, tmp_path):
    out, jobs, _ = two_processes
    torch.set_num_threads(1)
    single = run_config(parse_config(jobs["run_config"][method]), tmp_path / "single.nc")
    _assert_same_file(single, out / f"{method}.nc")
    assert not (out / f"{method}.nc.parts").exists()  # rank 0 cleaned up


@pytest.mark.parametrize("name", ["uneven", "fa-apf-model-noise", "pooled", "bpf-true"])
def test_two_processes_are_bit_identical_to_one(two_processes, name):
    _, jobs, results = two_processes
    single = _single(jobs["assimilate"][name])
    _assert_same_run(single, results[name])
    # the weights were not uniform (the pooled weights are the broadest: ESS 20.8 of 32)
    # and particles did cross between the ranks
    assert min(i[0] for i in single["infos"]) < 0.9 * single["particles"].shape[1]
    assert results[name]["moved"] > 0


def test_resume_across_process_counts(two_processes, tmp_path):
    out, jobs, results = two_processes
    full = _single(jobs["resume"])
    # a 2-process run interrupted after 2 steps, resumed in 2 processes
    _assert_same_run(full, results["resumed"])
    # the same checkpoint resumed in one process
    ckpt = tmp_path / "c.pt"
    shutil.copy(out / "resume-2steps.pt", ckpt)
    _assert_same_run(full, _single(jobs["resume"], checkpoint=ckpt))


def test_too_few_particles_per_process_is_refused(two_processes):
    msg = two_processes[2]["too_few"]
    assert msg.startswith("particles: N = 31 over 2 processes") and "32" in msg


# ----------------------------------------------------------------- in one process


def _em(**options):
    cfg = parse_config(_config(emulator_options=options))
    setup = build_twin_setup(cfg)
    return build_emulator(cfg, setup), setup


@pytest.mark.parametrize("sampler", ["xeab", "ddpm"])
@pytest.mark.parametrize("method", ["sample", "predict_mean", "sample_posterior"])
def test_a_block_gets_the_noise_of_its_rows(method, sampler):
    """Under _ShardedNoise an emulator call on rows [o, o + b) returns those rows of the
    one-process call on all B rows and leaves the generator where that call does."""
    em, setup = _em(steps=4, sampler=sampler)
    B, o, b = 40, 13, 17
    x = torch.randn(B, 3, generator=torch.Generator().manual_seed(1)) * 5
    twin = make_twin(setup, 0)
    args = (twin.observations[0],) if method == "sample_posterior" else ()
    torch.set_num_threads(1)
    g1, g2 = make_generator(7), make_generator(7)
    full = getattr(em, method)(x, *args, generator=g1)
    with _ShardedNoise(g2, b, B, o):
        part = getattr(em, method)(x[o : o + b], *args, generator=g2)
    assert torch.equal(part, full[o : o + b])
    assert torch.equal(g1.get_state(), g2.get_state())
    # without the interception the block's noise is another one
    plain = getattr(em, method)(x[o : o + b], *args, generator=make_generator(7))
    assert not torch.equal(plain, part)


def test_true_model_block_noise():
    from genfilter.emulators.simulator import true_model

    cfg = parse_config(_config(emulator="true", emulator_options={}))
    em = true_model(build_twin_setup(cfg).system)
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(2)) * 5
    g1, g2 = make_generator(3), make_generator(3)
    full = em.sample(x, generator=g1)
    with _ShardedNoise(g2, 16, 30, 14):
        part = em.sample(x[14:], generator=g2)
    assert torch.equal(part, full[14:]) and torch.equal(g1.get_state(), g2.get_state())


def test_data_dependent_draws_are_refused():
    g = make_generator(0)
    w = torch.rand(20, 4)
    with _ShardedNoise(g, 20, 40, 0), pytest.raises(RuntimeError, match="multinomial"):
        torch.multinomial(w, 1, generator=g)
    # draws from another generator, or not shaped by the block, pass through unchanged
    with _ShardedNoise(g, 20, 40, 0):
        assert torch.rand(20, generator=make_generator(1)).shape == (20,)
        assert torch.rand(1, generator=g).shape == (1,)


def test_network_rows_do_not_depend_on_the_batch_size():
    """The premise of bit-identity on CPU: the shipped denoiser's output (and input
    gradient) for a row is the same bits in any batch of at least
    MIN_PARTICLES_PER_PROCESS rows (module docstring of genfilter.distributed)."""
    em, _ = _em()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    N = 300
    u = torch.randn(N, 3, generator=g)
    cond = em.condition(torch.randn(N, 3, generator=g) * 5)
    t = torch.tensor(0.4)
    u_in = u.clone().requires_grad_()
    full = em.denoiser(u_in, t, cond=cond).mean
    (grad,) = torch.autograd.grad(full[:, 0].sum(), u_in)
    for m in (MIN_PARTICLES_PER_PROCESS, 17, 31, 64, 150):
        for lo in (0, 5, N - m):
            ui = u[lo : lo + m].clone().requires_grad_()
            part = em.denoiser(ui, t, cond=cond[lo : lo + m]).mean
            (gp,) = torch.autograd.grad(part[:, 0].sum(), ui)
            assert torch.equal(part, full[lo : lo + m]), (m, lo)
            assert torch.equal(gp, grad[lo : lo + m]), (m, lo)


def test_single_process_default_is_untouched():
    """Without a process group assimilate shards nothing, and asking for it fails clearly."""
    cfg = parse_config(_config())
    setup = build_twin_setup(cfg)
    em = build_emulator(cfg, setup)
    twin = make_twin(setup, run_seed(cfg, 0)[0])
    filt = build_filter(cfg, em, setup, make_generator(0))
    with pytest.raises(RuntimeError, match="process group"):
        assimilate(filt, twin.initial_ensemble(32), twin.observations[:1], distributed=True)
    assert filt.sharding is None
    from genfilter.filters.enkf import EnKF

    with pytest.raises(TypeError, match="distributed: EnKF cannot split"):
        assimilate(EnKF(em), twin.initial_ensemble(32), twin.observations[:1], distributed=True)


def test_the_torchrun_command(tmp_path):
    """`torchrun --nproc-per-node 2 ... genfilter filter cfg.yaml` (the README's form)."""
    # `torchrun` is `python -m torch.distributed.run`; the `genfilter` script is installed
    # with the package, so its absence is a broken install, not a reason to skip
    genfilter = Path(sys.executable).with_name("genfilter")
    assert genfilter.exists(), f"the genfilter command is not installed next to {sys.executable}"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(method="bpf", steps=2)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "--no-python",
        str(genfilter),
        "filter",
        str(cfg_path),
        "--out",
        str(tmp_path / "multi.nc"),
        "--no-progress",
    ]
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("Output:") == 1  # rank 0 alone reports
    torch.set_num_threads(1)
    single = run_config(load_config(cfg_path), tmp_path / "single.nc", progress=False)
    _assert_same_file(single, tmp_path / "multi.nc")


@pytest.mark.parametrize(
    "draw",
    [
        lambda x, g: torch.randn(x.shape, generator=g),
        lambda x, g: torch.rand(*x.shape, generator=g, dtype=torch.float64),
        lambda x, g: torch.randint(0, 10, x.shape, generator=g),
        lambda x, g: torch.randn_like(x, generator=g),
        lambda x, g: torch.empty_like(x).normal_(generator=g),
        lambda x, g: torch.empty_like(x).uniform_(-1, 1, generator=g),
    ],
)
def test_every_sized_draw_is_the_one_process_draw(draw):
    x = torch.zeros(50, 2)
    g1, g2 = make_generator(5), make_generator(5)
    full = draw(x, g1)
    with _ShardedNoise(g2, 20, 50, 30):
        part = draw(x[30:], g2)
    assert torch.equal(part, full[30:]) and torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize(
    "gpus, device, backend, expect_backend, expect_gpu",
    [
        (2, "cuda", None, "nccl", 1),  # a GPU per process: NCCL, GPU LOCAL_RANK
        (1, "cuda", None, "gloo", 0),  # two processes share one GPU: gloo
        (1, None, None, "gloo", 0),  # device unknown, CUDA available: the same rule
        (2, "cpu", None, "gloo", None),  # CPU particles on a GPU machine: gloo, no GPU
        (1, "cuda", "nccl", ValueError, None),  # NCCL cannot share a GPU
    ],
)
def test_backend_and_gpu_of_a_process(
    monkeypatch, gpus, device, backend, expect_backend, expect_gpu
):
    """The backend and the GPU each process picks, from the processes of its node
    (LOCAL_WORLD_SIZE) and the GPUs it sees (the process group itself is not started)."""
    import genfilter.distributed as gd

    started, chosen = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(gd.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(gd.dist, "init_process_group", lambda b: started.append(b))
    monkeypatch.setattr(gd.dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(gd.atexit, "register", lambda f: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: chosen.append(i))
    if expect_backend is ValueError:
        with pytest.raises(ValueError, match="nccl.*GPU per process"):
            gd.init_from_env(backend, device=device)
        assert started == []
        return
    gd.init_from_env(backend, device=device)
    assert started == [expect_backend]
    assert chosen == ([] if expect_gpu is None else [expect_gpu])
