"""An untrained quick U-Net denoiser with seeded weights, for Navier–Stokes tests that
need the network's code path but not a trained network."""

from __future__ import annotations

import torch

from genfilter.emulators.networks import build_denoiser


def seeded_quick_unet(resolution: int):
    """The ``--quick`` U-Net on ``resolution``² fields, initialised from seed 0 (the global
    generator is left as it was).  Its last convolution (zero-initialised by design) gets
    small seeded weights too, so that the network, not only the EDM skip path, enters the
    Tweedie mean and the guidance's vector–Jacobian products."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        denoiser = build_denoiser("unet", (resolution, resolution), quick=True)
        with torch.no_grad():
            for p in denoiser.parameters():
                if p.abs().max() == 0:
                    p.normal_(0.0, 0.02)
    return denoiser.eval()
