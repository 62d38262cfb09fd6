"""Learned matting through the real rembg + onnxruntime path, with tiny ONNX models built here.

Each model is placed where rembg looks for the default model's weights (``$REMBG_HOME/models/<name>/``), so
rembg's own session class loads it and runs its own pre- and post-processing; nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import trimesh
from conftest import SUZANNE_ORBIT, load_glb_in_blender_world
from droplet3d.cli import main as cli_main
from droplet3d.errors import InputError
from droplet3d.recon import ReconOptions, matting, reconstruct
from droplet3d.recon.frames import Frames
from droplet3d.recon.masks import frame_masks
from droplet3d.recon.matting import DEFAULT_MODEL, MattingUnavailable, load_matting, weights_path
from droplet3d.recon.metrics import surface_scores
from onnx import TensorProto, helper

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the normalisation rembg applies for BiRefNet


def build_model(path, colour=(0.0, 0.0, 0.0), chroma=0.0, bias=0.0) -> None:
    """An ONNX image → logit map: ``Σ colour_c·v_c + chroma·(|r−g| + |g−b| + |b−r|) + bias`` on the pixel values
    ``v`` in [0, 1] (the model first undoes rembg's normalisation)."""
    def const(name, values, shape, kind=TensorProto.FLOAT):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, kind, shape, values))

    nodes = [
        const("std", list(STD), [1, 3, 1, 1]), const("mean", list(MEAN), [1, 3, 1, 1]),
        helper.make_node("Mul", ["input", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["v"]),  # back to pixel values in [0, 1]
        const("w", list(colour), [1, 3, 1, 1]),
        helper.make_node("Mul", ["v", "w"], ["wv"]),
        helper.make_node("ReduceSum", ["wv", "axes"], ["linear"], keepdims=1),
        const("axes", [1], [1], TensorProto.INT64),
        const("roll", [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [3, 3, 1, 1]),  # (r, g, b) → (g, b, r)
        helper.make_node("Conv", ["v", "roll"], ["shifted"]),
        helper.make_node("Sub", ["v", "shifted"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["absdiff"]),
        helper.make_node("ReduceSum", ["absdiff", "axes"], ["chroma"], keepdims=1),
        const("c", [chroma], [1]), const("b", [bias], [1]),
        helper.make_node("Mul", ["chroma", "c"], ["cc"]),
        helper.make_node("Add", ["linear", "cc"], ["sum"]),
        helper.make_node("Add", ["sum", "b"], ["logits"]),
    ]
    # Constants must precede their users in an ONNX graph.
    nodes.sort(key=lambda n: n.op_type != "Constant")
    graph = helper.make_graph(
        nodes, "tiny-matting",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture()
def rembg_home(tmp_path, monkeypatch):
    """An empty rembg cache of our own, never online."""
    home = tmp_path / "rembg"
    monkeypatch.setenv("REMBG_HOME", str(home))
    monkeypatch.setenv("DROPLET3D_OFFLINE", "1")
    monkeypatch.setattr(matting, "_failed_fetches", {})
    return home


def install(home, **model) -> None:
    build_model(home / "models" / DEFAULT_MODEL / f"{DEFAULT_MODEL}.onnx", **model)


def two_discs() -> np.ndarray:
    """Frames of a blue and a red disc on grey: colour sees both, the 'blue objects' model only the blue one."""
    yy, xx = np.mgrid[:96, :96]
    image = np.full((96, 96, 3), 200, np.uint8)
    image[(yy - 48) ** 2 + (xx - 30) ** 2 < 15**2] = (30, 60, 220)
    image[(yy - 48) ** 2 + (xx - 70) ** 2 < 12**2] = (220, 40, 30)
    return np.stack([image] * 8)


def frames_of(rgb: np.ndarray, alpha: np.ndarray | None = None, has_alpha=None) -> Frames:
    return Frames(rgb, alpha, [f"{k:04d}.png" for k in range(len(rgb))], None, has_alpha)


def test_learned_masks_come_from_the_onnx_model_through_rembg(rembg_home):
    install(rembg_home, colour=(-30.0, 0.0, 30.0), bias=-6.0)  # logit > 0 where blue exceeds red by 0.2
    rgb = two_discs()
    masks, info, warnings = frame_masks(frames_of(rgb), "auto")
    assert info == {"method": "learned", "model": DEFAULT_MODEL, "exact_alpha_frames": 0} and warnings == []
    blue = np.zeros((96, 96), bool)
    yy, xx = np.mgrid[:96, :96]
    blue[(yy - 48) ** 2 + (xx - 30) ** 2 < 15**2] = True
    for mask in masks:
        assert (mask != blue).sum() <= 0.03 * blue.sum()  # edges only: the red disc is not foreground
    colour, info, _ = frame_masks(frames_of(rgb), "colour")
    assert info["method"] == "colour" and colour[0, 48, 70] and not masks[0, 48, 70]


def test_parts_the_model_drops_come_back_from_colour_where_they_touch_its_matte(rembg_home):
    install(rembg_home, colour=(-30.0, 0.0, 30.0), bias=-6.0)  # the 'blue objects' model
    rgb = two_discs()
    yy, xx = np.mgrid[:96, :96]
    cap = ((yy - 26) ** 2 + (xx - 30) ** 2 < 9**2) & ~((yy - 48) ** 2 + (xx - 30) ** 2 < 15**2)
    rgb[:, cap] = (220, 40, 30)  # a red cap on the blue disc: one object, the model sees only its blue part
    masks, info, _ = frame_masks(frames_of(rgb), "learned")
    assert info["method"] == "learned"
    for mask in masks:
        assert mask[cap].mean() > 0.95  # the cap is back: colour sees it, and it touches the matte
        assert not mask[48, 70] and not mask[40:56, 62:78].any()  # the separate red disc stays out


def test_a_background_that_is_not_plain_leaves_the_learned_matte_as_it_is(rembg_home):
    install(rembg_home, colour=(-30.0, 0.0, 30.0), bias=-6.0)  # the 'blue objects' model
    rgb = two_discs()
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 30) ** 2 < 15**2
    stripes = np.where((xx // 4 % 2 == 0)[..., None], (200, 40, 30), (40, 190, 40)).astype(np.uint8)
    rgb[:, ~disc] = stripes[~disc]  # red and green stripes behind the blue disc: colour sees foreground everywhere
    masks, _, _ = frame_masks(frames_of(rgb), "learned")
    for mask in masks:
        assert (mask != disc).sum() <= 0.03 * disc.sum()  # the disc, as the model says; not the whole frame


def test_exact_alpha_on_frame_zero_is_kept_beside_learned_mattes(rembg_home):
    install(rembg_home, colour=(-30.0, 0.0, 30.0), bias=-6.0)
    rgb = two_discs()
    alpha = np.zeros(rgb.shape[:3], np.uint8)
    alpha[0, 10:30, 10:40] = 255  # frame 0's cut-out says: this rectangle, whatever the colours
    has_alpha = np.zeros(len(rgb), bool)
    has_alpha[0] = True
    masks, info, _ = frame_masks(frames_of(rgb, alpha, has_alpha), "auto")
    assert info["exact_alpha_frames"] == 1 and info["method"] == "learned"
    assert masks[0].sum() == 20 * 30 and masks[0, 10:30, 10:40].all()
    assert masks[1, 48, 30] and not masks[1, 20, 20]


def test_absent_weights_offline_fall_back_to_colour_with_a_warning(rembg_home):
    assert weights_path() is None
    rgb = two_discs()
    masks, info, warnings = frame_masks(frames_of(rgb), "auto")
    assert info["method"] == "colour" and info["model"] is None
    assert [w["code"] for w in warnings] == ["matting_unavailable"]
    assert "learned matting unavailable" in warnings[0]["message"] and "fetch-models" in warnings[0]["message"]
    assert masks[0, 48, 30] and masks[0, 48, 70]  # the colour model sees both discs
    with pytest.raises(MattingUnavailable, match="fetch-models"):
        frame_masks(frames_of(rgb), "learned")


def test_a_failed_fetch_is_not_tried_again_by_every_job_but_fetch_models_tries(rembg_home, monkeypatch):
    monkeypatch.delenv("DROPLET3D_OFFLINE")
    for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):  # a route out that refuses at once
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    with pytest.raises(MattingUnavailable, match="cannot fetch") as first:
        load_matting()
    assert "not tried again" not in first.value.message
    with pytest.raises(MattingUnavailable, match="not tried again for 10 min") as second:
        load_matting()
    assert second.value.message.startswith(first.value.message)
    with pytest.raises(MattingUnavailable, match="cannot fetch") as explicit:
        matting.fetch_weights()
    assert "not tried again" not in explicit.value.message


def test_unreadable_weights_are_reported_not_crashed_on(rembg_home):
    path = rembg_home / "models" / DEFAULT_MODEL / f"{DEFAULT_MODEL}.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx file")
    with pytest.raises(MattingUnavailable, match="do not load"):
        load_matting()
    _, info, warnings = frame_masks(frames_of(two_discs()), "auto")
    assert info["method"] == "colour" and "do not load" in warnings[0]["message"]


def test_unknown_matting_options_are_input_errors(rembg_home):
    with pytest.raises(InputError, match="matting must be one of"):
        ReconOptions(matting="magic")
    with pytest.raises(InputError, match="unknown matting model"):
        load_matting("rmbg-non-commercial")


def test_reconstruct_with_learned_matting_records_it_and_scores(rembg_home, suzanne, tmp_path):
    # A "not grey" model: chroma above 0.08 is object (Suzanne's clay and paint; the grey background has none).
    install(rembg_home, chroma=60.0, bias=-4.8)
    result = reconstruct(suzanne / "frames", tmp_path / "job", ReconOptions(
        elevation_deg=SUZANNE_ORBIT.elevation_deg, fov_deg=SUZANNE_ORBIT.fov_deg, radius=SUZANNE_ORBIT.radius,
        direction=1, closed=False, matting="learned", texture_size=256, per_frame=False))  # the true, uniform orbit
    section = json.loads((tmp_path / "job" / "manifest.json").read_text())
    hull = section["masks"].pop("hull")
    assert section["masks"] == {"method": "learned", "model": DEFAULT_MODEL, "exact_alpha_frames": 0}
    assert hull["unexplained"] < 0.01 and hull["forgiven_views"] == 0  # consistent masks: nothing repaired or forgiven
    assert section["warnings"] == [] and result.warnings == []
    mesh = load_glb_in_blender_world(tmp_path / "job" / "mesh.glb")
    truth = trimesh.load(suzanne / "truth.ply", force="mesh")
    assert surface_scores(mesh, truth)["f@0.05"] > 0.9


def test_reconstruct_without_weights_warns_in_manifest_and_cli(rembg_home, suzanne, tmp_path, capsys):
    out = tmp_path / "job"
    code = cli_main(["reconstruct", str(suzanne / "frames"), "--out", str(out), "--elevation", "25", "--fov", "40",
                     "--radius", "2.5", "--texture-size", "256"])
    assert code == 0
    section = json.loads((out / "manifest.json").read_text())
    assert section["masks"]["method"] == "colour"
    matting = [w for w in section["warnings"] if w["code"] == "matting_unavailable"]
    assert len(matting) == 1 and "learned matting unavailable" in matting[0]["message"]
    assert "warning: learned matting unavailable" in capsys.readouterr().err


def test_fetch_models_reports_weights_already_in_the_cache(rembg_home, capsys):
    install(rembg_home, chroma=1.0)
    assert cli_main(["fetch-models"]) == 0
    assert f"{DEFAULT_MODEL} (MIT) at {weights_path()}" in capsys.readouterr().out
