"""models.frame_pool: the per-frame steps give the same result on worker processes as in-process."""

from __future__ import annotations

import numpy as np
import pytest

from eusdx.errors import DataError
from models.frame_pool import FrameJob, FramePool, FrameSkipped, FrameWork
from models.preprocess import PreprocessConfig
from models.radiomics_features import DEFAULT_SETTINGS
from models.roi import RoiConfig

from ._synth_eus import fan_frame


def _jobs() -> list[FrameJob]:
    rng = np.random.default_rng(3)
    jobs = []
    for i, (radius, rgb) in enumerate([(28.0, False), (22.0, True), (34.0, False)]):
        px, _, lesion = fan_frame(rng, lesion_radius=radius, rgb=rgb)
        seg = lesion if i == 2 else None  # one frame with a SEG mask, the others automatic
        jobs.append(FrameJob(f"f{i}", px, seg, 0.2))
    jobs.insert(1, FrameJob("blank", np.zeros((300, 400), np.uint8), None, None))
    return jobs


@pytest.fixture(scope="module")
def pool() -> FramePool:
    p = FramePool(PreprocessConfig(), RoiConfig(), DEFAULT_SETTINGS, processes=2)
    yield p
    p.close()


def test_worker_processes_give_the_in_process_result_in_frame_order(pool: FramePool) -> None:
    jobs = _jobs()
    local = FramePool(PreprocessConfig(), RoiConfig(), DEFAULT_SETTINGS, processes=1).analyse(jobs)
    remote = pool.analyse(jobs)
    assert [r.key for r in remote] == [j.key for j in jobs]
    assert isinstance(remote[1], FrameSkipped) and "sector" in str(remote[1].error)
    for a, b in zip(local, remote):
        assert type(a) is type(b)
        if isinstance(a, FrameWork) and isinstance(b, FrameWork):
            assert np.array_equal(a.pre.image, b.pre.image)
            assert np.array_equal(a.roi.mask, b.roi.mask)
            assert a.roi.source == b.roi.source
            assert a.features.keys() == b.features.keys()
            assert all(a.features[k] == b.features[k] for k in a.features)  # bit-identical
            assert set(b.timings) == {"preprocess", "roi", "radiomics"}
    assert remote[3].roi.source == "SEG"


def test_an_error_in_a_worker_reaches_the_caller_with_its_type(pool: FramePool) -> None:
    rng = np.random.default_rng(1)
    px, _, _ = fan_frame(rng)
    bad = FrameJob("bad-seg", px, np.ones((10, 10), bool), None)
    good = FrameJob("good", px, None, None)
    with pytest.raises(DataError, match="SEG mask shape"):
        pool.analyse([good, bad])
    assert isinstance(pool.analyse([good, good])[0], FrameWork)  # the pool still works


def _analyse_in_daemon(queue) -> None:  # type: ignore[no-untyped-def]
    try:
        pool = FramePool(PreprocessConfig(), RoiConfig(), DEFAULT_SETTINGS, processes=2)
        pool.warm()
        done = pool.analyse(_jobs())
        queue.put(("ok", [type(r).__name__ for r in done]))
    except BaseException as exc:  # noqa: BLE001 - reported to the test process
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def test_a_daemonic_process_runs_the_frames_in_process_instead_of_failing() -> None:
    """Celery's prefork pool runs tasks in daemonic processes, which may not start children: the
    pool must analyse there in-process (CI failure of test_celery_with_redis_end_to_end)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_analyse_in_daemon, args=(queue,), daemon=True)
    child.start()
    status, detail = queue.get(timeout=300)
    child.join(60)
    assert status == "ok", detail
    assert detail == ["FrameWork", "FrameSkipped", "FrameWork", "FrameWork"]


def test_processes_zero_means_one_per_usable_core_and_negative_is_refused() -> None:
    from models.frame_pool import usable_cores

    assert FramePool(PreprocessConfig(), RoiConfig(), DEFAULT_SETTINGS).processes == usable_cores()
    with pytest.raises(ValueError):
        FramePool(PreprocessConfig(), RoiConfig(), DEFAULT_SETTINGS, processes=-1)


def test_needed_inputs_follows_selectors_imputers_and_column_routing() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.feature_selection import SelectKBest, VarianceThreshold
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from models.feature_use import needed_inputs

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 9))
    X[:, 1] = np.nan  # empty at fit: SimpleImputer drops it
    X[:, 2] = 1.0  # constant: VarianceThreshold drops it
    y = (X[:, 4] + 0.5 * X[:, 6] > 0).astype(int)
    radiomics = Pipeline([("impute", SimpleImputer(strategy="median")), ("var", VarianceThreshold()),
                          ("scale", StandardScaler()), ("select", SelectKBest(k=2))])
    model = Pipeline([("prep", ColumnTransformer([("r", radiomics, slice(0, 6)),
                                                  ("d", StandardScaler(), slice(6, 9))])),
                      ("clf", LogisticRegression())]).fit(X, y)
    needed = needed_inputs(model, 9)
    kept = np.flatnonzero(needed[:6])
    assert len(kept) == 2 and 4 in kept and not needed[[1, 2]].any()
    assert needed[6:].all()
    # what is not needed really does not matter: change it and nothing moves
    Z = X.copy()
    Z[:, ~needed] = rng.normal(size=(80, int((~needed).sum()))) * 1e6
    assert np.array_equal(model.predict_proba(X), model.predict_proba(Z))
    # a step this module does not know: every input counts
    unknown = Pipeline([("pca", PCA(2)), ("clf", LogisticRegression())]).fit(np.nan_to_num(X), y)
    assert needed_inputs(unknown, 9).all()


def test_bundle_computes_only_the_radiomics_its_model_uses_with_the_same_probabilities(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    from models.bundle import Frame, load_bundle

    bundle = load_bundle(tiny_bundle)
    used = bundle.used_radiomics(bundle.primary)
    assert used is not None and 0 < len(used) < len(bundle._radiomics_names)
    rng = np.random.default_rng(5)
    frames = [Frame(pixels=fan_frame(rng, lesion_radius=r)[0], key=f"k{i}", mm_per_pixel=0.2)
              for i, r in enumerate([25, 30, 35])]
    bundle.use_processes(1)
    fast = bundle.predict(frames)
    bundle.use_processes(1, all_radiomics=True)  # everything, as before issue 21
    full = bundle.predict(frames)
    assert [r.probability for r in fast] == [r.probability for r in full]
