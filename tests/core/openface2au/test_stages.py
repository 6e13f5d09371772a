"""The OpenFace 2.2 AU stages on stand-in model files (tests/core/openface2au/standins.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.core.openface2au import align, files, median
from daemon.core.openface2au.analyser import Analyser
from daemon.core.openface2au.formats import ModelFileError, RegressorType, load_model_set, read_model
from daemon.core.openface2au.pdm import PDM, calc_params, euler_to_matrix, matrix_to_euler
from daemon.core.openface2au.predict import AUS_C, AUS_R, Predictors

from . import standins


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return standins.make_model_set(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def analyser(model_root) -> Analyser:
    return Analyser.load(model_root.parent)


def test_au_list_paths_stay_inside_the_folder():
    text = "svr_combined/AU_1_dynamic_intensity_comb.dat AU01\n\nsvm_combined/AU_1_dynamic.dat AU01\r\n"
    assert files.listed_model_paths(text) == [
        "lib/local/FaceAnalyser/AU_predictors/svr_combined/AU_1_dynamic_intensity_comb.dat",
        "lib/local/FaceAnalyser/AU_predictors/svm_combined/AU_1_dynamic.dat"]
    with pytest.raises(ValueError, match="leaves"):
        files.parse_au_list("../../../etc/passwd AU01")


def test_model_set_reads_back_what_was_written(model_root):
    ms = load_model_set(model_root)
    mean, comp, eig = standins.pdm_arrays()
    np.testing.assert_array_equal(ms.pdm.mean_shape, mean)
    np.testing.assert_array_equal(ms.pdm.princ_comp, comp)
    np.testing.assert_array_equal(ms.triangulation, standins.triangles())
    assert len(ms.models) == 35
    dyn = [m for m in ms.models if m.kind == RegressorType.SVR_DYNAMIC]
    assert len(dyn) == len(standins.DYNAMIC_R) and all(0.1 <= m.cutoff <= 0.8 for m in dyn)
    assert {m.au for m in ms.models if m.regressor} == set(AUS_R)
    assert {m.au for m in ms.models if not m.regressor} == set(AUS_C)


def test_a_cut_model_file_is_refused_with_its_name(tmp_path, model_root):
    src = next((model_root / "lib/local/FaceAnalyser/AU_predictors/svr_combined").iterdir())
    cut = tmp_path / "cut.dat"
    cut.write_bytes(src.read_bytes()[:-9])
    with pytest.raises(ModelFileError, match="cut.dat"):
        read_model(cut, "AU01")


def test_euler_round_trip():
    for e in ([0.1, -0.3, 0.2], [0.0, 0.0, 0.0], [-0.5, 0.4, -1.0]):
        np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(np.array(e))), e, atol=1e-12)


def test_pdm_fit_recovers_known_parameters(analyser):
    """Landmarks made by the PDM from known parameters: the fit finds them again. Its regulariser (1/eigenvalue)
    pulls the modes slightly towards 0, so the bound is on the reprojection and the pose, not exact modes."""
    pdm: PDM = analyser.pdm
    rng = np.random.default_rng(5)
    local = rng.normal(0, 0.5, pdm.n_modes) * np.sqrt(pdm.eigen_values)
    glob = np.array([1.6, 0.1, -0.15, 0.05, 320.0, 180.0])
    points = pdm.shape_2d(glob, local)
    g, p = calc_params(pdm, points)
    fitted = pdm.shape_2d(g, p)
    assert np.sqrt(((fitted - points) ** 2).sum(axis=1)).max() < 0.5  # pixels, face ~220 px wide
    np.testing.assert_allclose(g[0], glob[0], rtol=0.02)
    np.testing.assert_allclose(g[4:], glob[4:], atol=1.0)
    np.testing.assert_allclose(g[1:4], glob[1:4], atol=0.03)
    # the big modes (most of the shape) are found to within 5 % of their spread
    np.testing.assert_allclose(p[:8], local[:8], atol=0.05 * np.sqrt(pdm.eigen_values[:8]).max())


def test_alignment_puts_rigid_points_on_the_scaled_mean_shape(analyser):
    pdm = analyser.pdm
    glob = np.array([1.5, 0.0, 0.0, 0.3, 300.0, 170.0])
    points = pdm.shape_2d(glob, np.zeros(pdm.n_modes))
    g, _ = calc_params(pdm, points)
    m = align.warp_matrix(points, pdm.mean_shape, g[4], g[5])
    moved = points @ m[:, :2].T + m[:, 2]
    target = np.stack([pdm.mean_shape[:68], pdm.mean_shape[68:136]], axis=1) * align.SIM_SCALE + 56
    # a rotated mean shape with no expression: every point lands on the scaled mean (the PDM's z is dropped,
    # so only in-plane rotation is exact)
    np.testing.assert_allclose(moved, target, atol=0.05)
    scale = np.sqrt(np.linalg.det(m[:, :2]))
    np.testing.assert_allclose(scale, align.SIM_SCALE / glob[0], rtol=1e-3)


def test_mask_keeps_the_triangles_only(analyser):
    pdm = analyser.pdm
    pts = np.stack([pdm.mean_shape[:68], pdm.mean_shape[68:136]], axis=1) * 0.7 + 56
    keep = align.mask(pts, analyser.model_set.triangulation)
    assert keep[56, 56] == 1 and keep[0, 0] == 0 and keep[111, 0] == 0
    # a pixel on a triangle's vertex is inside (PAW's same-side test includes edges)
    x, y = np.round(pts[33]).astype(int)
    assert keep[y, x] == 1


def test_features_and_projection_shapes(analyser):
    pdm = analyser.pdm
    points = pdm.shape_2d(np.array([1.5, 0.05, 0.1, 0.02, 320.0, 180.0]), np.zeros(pdm.n_modes))
    image = standins.face_image(points)
    feats = analyser.features(image, points)
    assert feats.aligned.shape == (112, 112, 3) and feats.hog.shape == (4464,) and feats.geom.shape == (238,)
    assert feats.aligned[0, 0].sum() == 0 and feats.aligned[56, 56].sum() > 0
    reg, cls = analyser.project(feats)
    assert reg.shape == (17,) and cls.shape == (18,)


def test_histogram_median_is_numpy_median_within_a_bin():
    rng = np.random.default_rng(2)
    hog = rng.random((101, 30)) * 0.4
    geom = rng.normal(0, 10, (101, 12))
    h = median.Histograms.of_frames(hog, geom)
    hog_med, geom_med = h.medians()
    assert np.abs(hog_med - np.median(hog, axis=0)).max() <= 1.005 / 1000
    assert np.abs(geom_med - np.median(geom, axis=0)).max() <= 120 / 10000


def test_histograms_merge_in_any_order():
    rng = np.random.default_rng(4)
    hog, geom = rng.random((40, 20)), rng.normal(0, 5, (40, 7))
    whole = median.Histograms.of_frames(hog, geom)
    parts = [median.Histograms.of_frames(hog[a:b], geom[a:b]) for a, b in ((0, 7), (7, 8), (8, 31), (31, 40))]
    for merged in (median.Histograms.merge(parts), median.Histograms.merge(parts[::-1])):
        for name in ("hog_index", "hog_count", "geom_index", "geom_count"):
            np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
        assert merged.count == whole.count
    back = median.Histograms.from_arrays(whole.to_arrays("x_"), "x_")
    np.testing.assert_array_equal(back.medians()[0], whole.medians()[0])


def test_median_rules_of_update_running_median():
    # two frames: cutoff (2+1)//2 = 1 -> the lower value's bin centre; HOG below 0 floors at 0
    h = median.Histograms.of_frames(np.array([[0.2, -0.01], [0.6, -0.004]]), np.array([[1.0], [3.0]]))
    hog, geom = h.medians()
    width = 1.005 / 1000
    assert hog[0] == pytest.approx(-0.005 + int((0.2 + 0.005) * 1000 / 1.005) * width + width / 2)
    assert hog[1] == 0.0
    assert geom[0] == pytest.approx(-60 + int((1.0 + 60) * 10000 / 120) * 0.012 + 0.006)
    assert [median.counts_frame(f) for f in range(4)] == [True, False, True, False]


def test_finish_follows_the_offline_rules():
    """Hand-checked: one dynamic SVR with cutoff 0.5, the failure rule, the clamp, the 3-frame average; an SVM's
    7-frame vote."""
    d = 3
    w = np.eye(d)
    from daemon.core.openface2au.predict import Stack
    reg = Stack(w[:, :1], np.array([0.0]), np.array([True]), np.array([0.5]), np.ones(1), np.zeros(1))
    cls = Stack(w[:, :1], np.array([0.0]), np.array([False]), np.array([-1.0]), np.ones(1), np.zeros(1))
    pred = Predictors(reg, cls)
    proj = np.array([1.0, 2.0, np.nan, 7.0, 4.0, 3.0, 9.0, 1.0])[:, None]
    r, c = pred.finish(np.arange(8), proj, proj, np.array([0.5]), np.array([0.0]))
    # scores: proj - 0.5 on success; sorted good = [0.5 0.5 1.5 2.5 3.5 6.5 8.5]; shift = good[int(7*0.5)] = 2.5
    clamped = np.array([0.0, 0.0, 0.0, 4.0, 1.0, 0.0, 5.0, 0.0])
    expected = clamped.copy()
    expected[1:-1] = (clamped[:-2] + clamped[1:-1] + clamped[2:]) / 3
    np.testing.assert_allclose(r[:, 0], expected)
    occ = np.array([1, 1, 0, 1, 1, 1, 1, 1.0])
    out = occ.copy()
    out[3:5] = [1.0, 1.0]
    np.testing.assert_array_equal(c[:, 0], out)


def test_face_rows_carry_the_median_counts_by_value_and_merge_them():
    from daemon.core.results import FaceRows

    rng = np.random.default_rng(8)
    a = median.Histograms.of_frames(rng.random((3, 10)), rng.normal(0, 3, (3, 4)))
    b = median.Histograms.of_frames(rng.random((2, 10)), rng.normal(0, 3, (2, 4)))
    one = FaceRows.empty(2)
    one.of2_stats = {"main": a, "seg7:left_mirrored": b}
    back = FaceRows.from_bytes(one.to_bytes())
    assert set(back.of2_stats) == {"main", "seg7:left_mirrored"}
    np.testing.assert_array_equal(back.of2_stats["main"].hog_count, a.hog_count)
    other = FaceRows.empty(1)
    other.of2_stats = {"main": b}
    merged = FaceRows.concat([back, other])
    assert merged.of2_stats["main"].count == 5 and merged.of2_stats["seg7:left_mirrored"].count == 2
    assert FaceRows.from_bytes(FaceRows.empty(1).to_bytes()).of2_stats == {}


def test_mask_equals_paws_test_on_every_pixel(analyser):
    """The bounding-box-limited vectorised mask against PAW's rule applied to every pixel of the output (random
    shapes, some vertices exactly on pixel centres, where the edge rule decides)."""
    tris = analyser.model_set.triangulation
    mean = np.stack([analyser.pdm.mean_shape[:68], analyser.pdm.mean_shape[68:136]], axis=1)
    ys, xs = np.mgrid[0:112, 0:112].astype(np.float64)
    rng = np.random.default_rng(9)
    for _ in range(10):
        pts = mean * rng.uniform(0.4, 1.1) + 56 + rng.normal(0, 3, (68, 2))
        pts[::5] = np.round(pts[::5])
        every = np.zeros((112, 112), bool)
        for i, j, k in tris:
            p1, p2, p3 = pts[i], pts[j], pts[k]
            every |= (align._same_side(xs, ys, p1, p2, p3) & align._same_side(xs, ys, p2, p1, p3)
                      & align._same_side(xs, ys, p3, p1, p2))
        np.testing.assert_array_equal(align.mask(pts, tris), every.astype(np.uint8))


def test_rows_without_openface2_values_store_no_openface2_arrays():
    import io

    from daemon.core.results import OPTIONAL_FIELDS, FaceRows

    rows = FaceRows.empty(3)
    stored = np.load(io.BytesIO(rows.to_bytes()))
    assert not OPTIONAL_FIELDS & set(stored.files)
    back = FaceRows.from_bytes(rows.to_bytes())
    assert np.isnan(back.of2_r_proj).all() and (back.of2_segment == -1).all() and back.of2_r_proj.shape == (3, 17)
    rows.of2_r_proj[1] = np.arange(17)
    back = FaceRows.from_bytes(rows.to_bytes())
    np.testing.assert_array_equal(back.of2_r_proj[1], np.arange(17))
    assert np.isnan(back.of2_c_proj).all()


def test_fhog_is_written_cell_row_by_cell_row():
    """``Extract_FHOG_descriptor``: ``for y < num_cols: for x < num_rows: hog[y][x](0..30)`` with dlib's
    ``hog[row][col]``: the top cell row's 12 cells come first. A textured band at the top of the face shows it."""
    from daemon.core.openface2au import features

    img = np.full((112, 112, 3), 128, np.uint8)
    img[8:24] = 0
    img[8:24, ::4] = 255
    hog = features.fhog(img)
    assert hog.shape == (12 * 12 * 31,)
    energy = np.abs(hog.reshape(12, 12, 31)).sum(axis=2)
    assert energy[:3].min() > 1.0 and energy[3:].max() == 0.0


def test_merging_many_parts_densely_gives_the_same_counts():
    rng = np.random.default_rng(6)
    hog, geom = rng.random((300, 20)), rng.normal(0, 5, (300, 7))
    whole = median.Histograms.of_frames(hog, geom)
    parts = [median.Histograms.of_frames(hog[i:i + 2], geom[i:i + 2]) for i in range(0, 300, 2)]
    merged = median.Histograms.merge(parts)  # HOG counts merged densely, geometry by sorting (_add)
    for name in ("hog_index", "hog_count", "geom_index", "geom_count"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
