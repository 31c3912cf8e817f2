"""genfilter: Bayesian filtering with generative emulators (FA-APF and baselines)."""

__version__ = "0.1.0"
