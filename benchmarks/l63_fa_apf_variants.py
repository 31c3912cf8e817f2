"""Where FA-APF's gap to the EnKF on Lorenz-63 setup (a) does *not* come from: FA-APF
(N = 32, 100 steps, burn-in 10, twins of seeds 0-2) with the default proposal (xeab, 64
steps), with 128 diffusion steps, and with gaussian weights with and without the ESS
interval.  Prints skill and spread per seed and variant (docs/results/l63.md).

    python benchmarks/l63_fa_apf_variants.py a      # about 5 minutes on one core
"""

from __future__ import annotations

import sys

import torch

from genfilter.experiments.config import parse_config
from genfilter.experiments.l63 import load_shipped_emulator
from genfilter.experiments.runner import build_twin_setup
from genfilter.experiments.twin import make_twin
from genfilter.filters import FAAPF, assimilate

VARIANTS = {
    "default": ({}, {}),
    "128 diffusion steps": ({"steps": 128}, {}),
    "gaussian weights, no inflation": ({}, {"weights": "gaussian", "ess_interval": None}),
    "gaussian weights": ({}, {"weights": "gaussian"}),
}


def main(obs: str = "a") -> None:
    torch.set_num_threads(1)
    print("| seed | variant | skill | spread |\n|---|---|---|---|")
    for seed in (0, 1, 2):
        cfg = parse_config(
            {
                "setup": f"l63-{obs}",
                "filter": {"method": "fa-apf", "particles": 32},
                "steps": 100,
                "burn_in": 10,
            }
        )
        twin = make_twin(build_twin_setup(cfg), seed)
        x0 = twin.initial_ensemble(32)
        for name, (em_kw, f_kw) in VARIANTS.items():
            f = FAAPF(load_shipped_emulator(**em_kw), generator=seed + 1, **f_kw)
            s = assimilate(f, x0, twin.observations, truth=twin.truth, progress=False).summary(10)
            print(f"| {seed} | {name} | {s['skill']:.3f} | {s['spread']:.3f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "a")
