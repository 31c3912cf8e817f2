"""Properties of genfilter.systems.datasets (trajectory datasets on disk; docs/systems.md)."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from genfilter import __version__
from genfilter.systems import datasets
from genfilter.systems.datasets import (
    SYSTEMS,
    DatasetSpec,
    consecutive_pairs,
    describe,
    generate_dataset,
    load_split,
    load_stats,
    make_system,
)
from genfilter.systems.lorenz63 import StochasticLorenz63
from genfilter.systems.navier_stokes import NavierStokes2D


def small_l63(**overrides) -> DatasetSpec:
    """6 trajectories x 20 snapshots after 0.5 time units of burn-in, 3 chunks of 2."""
    kw = {"trajectories": 6, "length": 20, "burn_in": 0.5, "seed": 0, "chunk": 2}
    kw.update(overrides)
    return DatasetSpec("lorenz63", **kw)


def small_ns(**overrides) -> DatasetSpec:
    """NS at the smallest allowed grid (24²), snapshots every 0.01: 2 trajectories x 3."""
    kw = {
        "system_kwargs": {"resolution": 24, "interval": 0.01},
        "trajectories": 2,
        "length": 3,
        "burn_in": 0.02,
        "split": (0.5, 0.5, 0.0),
        "chunk": 1,
    }
    kw.update(overrides)
    return DatasetSpec("ns2d", **kw)


def arrays(out) -> dict[str, np.ndarray]:
    return {s: load_split(out, s)["state"].values for s in datasets.SPLITS}


def assert_same_data(a, b):
    for split in datasets.SPLITS:
        da, db = load_split(a, split), load_split(b, split)
        assert np.array_equal(da["state"].values, db["state"].values), split
        assert np.array_equal(da["trajectory"].values, db["trajectory"].values), split
    assert load_stats(a)["state"] == load_stats(b)["state"]
    assert load_stats(a)["residual"] == load_stats(b)["residual"]


@pytest.fixture(scope="module")
def l63(tmp_path_factory):
    out = tmp_path_factory.mktemp("l63")
    return generate_dataset(small_l63(), out, progress=False)


# -- registry and spec -------------------------------------------------------------------


def test_registry_builds_the_systems_with_overrides():
    assert set(SYSTEMS) == {"lorenz63", "lorenz96", "ns2d", "linear-gaussian"}
    lg = make_system("linear-gaussian", dim=4, seed=3)
    assert lg.state_shape == (4,) and bool(
        (lg.A == make_system("linear-gaussian", dim=4, seed=3).A).all()
    )
    assert isinstance(make_system("lorenz63"), StochasticLorenz63)
    ns = make_system("ns2d")
    assert isinstance(ns, NavierStokes2D) and ns.resolution == 64
    assert make_system("ns2d", resolution=32).resolution == 32
    assert make_system("lorenz96", dim=10).state_shape == (10,)
    with pytest.raises(ValueError, match="'lorenz63', 'lorenz96', 'ns2d'.*got 'l63'"):
        make_system("l63")


def test_spec_defaults_per_system():
    s = DatasetSpec("lorenz63")
    assert (s.trajectories, s.length, s.burn_in, s.split) == (1024, 1024, 10.0, (0.8, 0.1, 0.1))
    assert s.system_kwargs["epsilon"] == 0.3 and s.system_kwargs["interval"] == 0.1
    assert s.split_sizes() == (820, 102, 102)
    assert (DatasetSpec("lorenz96").trajectories, DatasetSpec("lorenz96").length) == (256, 1024)
    ns = DatasetSpec("ns2d")
    assert (ns.trajectories, ns.length, ns.system_kwargs["resolution"]) == (64, 100, 64)
    assert DatasetSpec.from_dict(json.loads(s.to_json())) == s


@pytest.mark.parametrize(
    "field, value",
    [
        ("system", "l63"),
        ("trajectories", 0),
        ("trajectories", 2.5),
        ("length", 1),
        ("length", True),
        ("burn_in", -1.0),
        ("burn_in", float("nan")),
        ("seed", -3),
        ("split", (0.5, 0.5)),
        ("split", (0.7, 0.2, 0.2)),
        ("split", (0.0, 0.5, 0.5)),
        ("chunk", 0),
        ("system_kwargs", {"sigmaa": 1.0}),
        ("system_kwargs", {"epsilon": -1.0}),
        ("system_kwargs", {"epsilon": [0.3]}),
    ],
)
def test_bad_spec_fields_raise_errors_naming_the_field(field, value):
    kw = {"trajectories": 6, "length": 20}
    kw[field] = value
    name = kw.pop("system", "lorenz63")
    with pytest.raises(ValueError, match=field) as err:
        DatasetSpec(name, **kw)
    if field not in ("system_kwargs",):
        assert repr(value)[:6] in str(err.value)


def test_too_few_trajectories_for_the_split_is_an_error():
    with pytest.raises(ValueError, match="trajectories = 2 .* valid split would be empty"):
        DatasetSpec("lorenz63", trajectories=2)


# -- reproducibility -------------------------------------------------------------------


def test_same_seed_gives_bitwise_identical_data_other_seed_differs(l63, tmp_path):
    again = generate_dataset(small_l63(), tmp_path / "again", progress=False)
    assert_same_data(l63, again)
    other = generate_dataset(small_l63(seed=1), tmp_path / "other", progress=False)
    a, b = arrays(l63), arrays(other)
    assert not np.array_equal(a["train"][:, 0], b["train"][:, 0])


def test_data_do_not_depend_on_chunk_size(l63, tmp_path):
    assert_same_data(l63, generate_dataset(small_l63(chunk=3), tmp_path / "c3", progress=False))
    assert_same_data(l63, generate_dataset(small_l63(chunk=6), tmp_path / "c6", progress=False))


def test_trajectory_i_depends_only_on_seed_and_i(l63, tmp_path):
    # 4 trajectories in chunks of 3 hold exactly the first 4 of the 6-trajectory dataset
    small = generate_dataset(small_l63(trajectories=4, chunk=3, split=(0.5, 0.25, 0.25)), tmp_path)
    big = xr.concat([load_split(l63, s) for s in datasets.SPLITS], "trajectory").sortby(
        "trajectory"
    )
    mine = xr.concat([load_split(small, s) for s in datasets.SPLITS], "trajectory").sortby(
        "trajectory"
    )
    assert np.array_equal(mine["state"].values, big["state"].values[:4])


def test_ns2d_small_grid_fields_and_chunking(tmp_path):
    a = generate_dataset(small_ns(), tmp_path / "a", progress=False)
    b = generate_dataset(small_ns(chunk=2), tmp_path / "b", progress=False)
    assert_same_data(a, b)
    train = load_split(a, "train")
    assert train["state"].dims == ("trajectory", "time", "x", "y")
    assert train["state"].shape == (1, 3, 24, 24)
    np.testing.assert_allclose(train["x"].values, np.arange(24) * 2 * np.pi / 24)
    np.testing.assert_allclose(train["time"].values, [0.0, 0.01, 0.02])
    assert load_split(a, "test")["state"].shape == (0, 3, 24, 24)  # split fraction 0
    stats = load_stats(a)
    assert np.asarray(stats["state"]["per_component"]["std"]).shape == (24, 24)
    x = train["state"].values.astype(np.float64)
    assert stats["state"]["scalar"]["std"] == pytest.approx(x.std(), rel=1e-12)


# -- resume and caching ------------------------------------------------------------------


class Crash(RuntimeError):
    pass


def counting(monkeypatch, crash_after: int | None = None) -> list:
    calls = []
    real = datasets._integrate_chunk

    def wrapper(spec, indices, tick=None):
        if crash_after is not None and len(calls) == crash_after:
            raise Crash("simulated crash")
        calls.append(list(indices))
        return real(spec, indices, tick)

    monkeypatch.setattr(datasets, "_integrate_chunk", wrapper)
    return calls


def test_resume_after_crash_computes_only_missing_chunks_and_gives_the_same_files(
    l63, tmp_path, monkeypatch
):
    out = tmp_path / "crashed"
    with monkeypatch.context() as m:
        counting(m, crash_after=2)
        with pytest.raises(Crash):
            generate_dataset(small_l63(), out, progress=False)
    chunk_files = sorted(p.name for p in (out / "chunks").iterdir())
    assert chunk_files == ["chunk_0000.nc", "chunk_0001.nc"]
    assert not (out / "train.nc").exists()
    calls = counting(monkeypatch)
    generate_dataset(small_l63(), out, progress=False)
    assert calls == [[4, 5]]
    assert_same_data(l63, out)
    skip = {"created", "command", "call"}
    for split in datasets.SPLITS:
        a, b = load_split(l63, split).attrs, load_split(out, split).attrs
        assert {k: v for k, v in a.items() if k not in skip} == {
            k: v for k, v in b.items() if k not in skip
        }


def test_finished_dataset_is_cached(l63, monkeypatch):
    calls = counting(monkeypatch)
    monkeypatch.setattr(datasets, "_merge", lambda *a: pytest.fail("merged again"))
    assert generate_dataset(small_l63(), l63, progress=False) == l63
    # chunk is the compute plan, not the data: a finished dataset serves another chunk too
    assert generate_dataset(small_l63(chunk=3), l63, progress=False) == l63
    assert calls == []


def test_resume_false_recomputes_everything(tmp_path, monkeypatch):
    out = generate_dataset(small_l63(), tmp_path, progress=False)
    calls = counting(monkeypatch)
    generate_dataset(small_l63(), out, progress=False, resume=False)
    assert len(calls) == 3


def test_spec_mismatch_in_out_dir_is_a_clear_error(l63, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"another spec \(seed: stored 0, asked 1\).*new out_dir"):
        generate_dataset(small_l63(seed=1), l63, progress=False)
    # unfinished: only chunk files
    out = tmp_path / "partial"
    with monkeypatch.context() as m:
        counting(m, crash_after=1)
        with pytest.raises(Crash):
            generate_dataset(small_l63(), out, progress=False)
    with pytest.raises(ValueError, match=r"chunk_0000\.nc.*length: stored 20, asked 21.*overwrite"):
        generate_dataset(small_l63(length=21), out, progress=False)
    with pytest.raises(ValueError, match="rerun with chunk=2 to resume"):
        generate_dataset(small_l63(chunk=3), out, progress=False)
    # overwrite replaces it
    generate_dataset(small_l63(length=21), out, progress=False, overwrite=True)
    assert load_split(out)["state"].shape == (4, 21, 3)


# -- splits, statistics, pairs, files ----------------------------------------------------


def test_split_is_by_trajectory_with_the_right_sizes(l63):
    parts = {s: load_split(l63, s) for s in datasets.SPLITS}
    assert [parts[s].sizes["trajectory"] for s in datasets.SPLITS] == [4, 1, 1]
    ids = np.concatenate([parts[s]["trajectory"].values for s in datasets.SPLITS])
    assert sorted(ids) == list(range(6))
    # each split row is the trajectory with that index in the chunk files
    with xr.open_dataset(l63 / "chunks" / "chunk_0001.nc") as chunk:
        for ds in parts.values():
            for t in ds["trajectory"].values:
                if t in (2, 3):
                    assert np.array_equal(
                        ds["state"].sel(trajectory=t).values,
                        chunk["state"].sel(trajectory=t).values,
                    )


def test_stats_come_from_the_train_split_only(l63):
    stats = load_stats(l63)
    train = load_split(l63, "train")["state"].values.astype(np.float64)
    res = train[:, 1:] - train[:, :-1]
    st, rs = stats["state"], stats["residual"]
    np.testing.assert_allclose(st["per_component"]["mean"], train.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(st["per_component"]["std"], train.std(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(rs["per_component"]["mean"], res.mean(axis=(0, 1)), rtol=1e-10)
    np.testing.assert_allclose(rs["per_component"]["std"], res.std(axis=(0, 1)), rtol=1e-12)
    assert st["scalar"]["std"] == pytest.approx(train.std(), rel=1e-12)
    assert rs["scalar"]["mean"] == pytest.approx(res.mean(), rel=1e-10)
    assert (st["count"], rs["count"]) == (4 * 20, 4 * 19)
    every = np.concatenate([arrays(l63)[s] for s in datasets.SPLITS]).astype(np.float64)
    assert not np.allclose(st["per_component"]["mean"], every.mean(axis=(0, 1)))


def test_consecutive_pairs_are_successive_snapshots_of_one_trajectory(l63):
    ds = load_split(l63, "train")
    state = ds["state"].values
    x_prev, x_next = consecutive_pairs(ds)
    assert x_prev.shape == x_next.shape == (4 * 19, 3) and x_prev.dtype == torch.float32
    for i in (0, 18, 19, 75):
        t, k = divmod(i, 19)
        assert torch.equal(x_prev[i], torch.from_numpy(state[t, k]))
        assert torch.equal(x_next[i], torch.from_numpy(state[t, k + 1]))
    p2, n2 = consecutive_pairs(ds["state"], lag=2)
    assert p2.shape == (4 * 18, 3) and torch.equal(n2[18], torch.from_numpy(state[1, 2]))
    with pytest.raises(ValueError, match="lag"):
        consecutive_pairs(ds, lag=20)


def test_netcdf_files_open_with_xarray_and_carry_provenance(l63):
    with xr.open_dataset(l63 / "train.nc") as ds:
        assert ds["state"].dims == ("trajectory", "time", "component")
        np.testing.assert_allclose(ds["time"].values, np.arange(20) * 0.1)
        assert ds.attrs["system"] == "lorenz63" and ds.attrs["seed"] == 0
        assert DatasetSpec.from_dict(json.loads(ds.attrs["spec"])) == small_l63()
        assert json.loads(ds.attrs["system_kwargs"])["epsilon"] == 0.3
        assert ds.attrs["genfilter_version"] == __version__
        assert "generate_dataset(DatasetSpec(system='lorenz63'" in ds.attrs["call"]
        assert ds.attrs["burn_in"] == pytest.approx(0.5)
    assert load_stats(l63)["spec"] == small_l63().to_dict()


def test_describe_and_loading_errors(l63, tmp_path):
    text = describe(l63)
    assert "lorenz63" in text and "trajectory=4, time=20, component=3" in text
    assert "residual" in text
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(l63, "training")
    with pytest.raises(FileNotFoundError, match="generate the dataset first"):
        load_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="stats.json"):
        load_stats(tmp_path)
