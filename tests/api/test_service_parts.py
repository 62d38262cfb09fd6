"""The service's pure-Python parts, without a server: params, store, retention, progress, uploads, artifacts."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib

import pytest
from api_helpers import frames_zip, png_bytes
from droplet3d.api.artifacts import ARTIFACT_RE, list_artifacts, write_frames_zip
from droplet3d.api.http_errors import ApiError
from droplet3d.api.progress import ProgressTracker, stages_for
from droplet3d.api.schemas import JobParams
from droplet3d.api.store import INTERRUPTED_MESSAGE, Job, JobStore, new_job_id, select_expired
from droplet3d.api.uploads import check_image_bytes, save_frames_zip
from pydantic import ValidationError


def parse(**params):
    return JobParams.model_validate_json(json.dumps(params), context={"max_prompt_chars": 100})


# -- params ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [
    {"prompt": "x", "colour": "red"},  # unknown field
    {"prompt": "x", "width": 100},  # not a multiple of 16
    {"prompt": "x", "width": "64"},  # a string is not a number
    {"prompt": "x", "steps": 2.0},  # a float is not an int
    {"prompt": "x", "view_align": "yes"},
    {"prompt": "   "},
    {"prompt": "x" * 101},  # over the prompt limit
    {"prompt": "x", "num_frames": 0},
    {"prompt": "x", "mode": "sculpt"},
    {"prompt": "x", "orbit": {"elevation": 95}},
    {"prompt": "x", "mesh": {"faces": 10}},
    {"prompt": "x", "background": "white"},  # not #rrggbb
    {"prompt": "x", "background": "#fff"},
])
def test_job_params_reject_bad_values(params):
    with pytest.raises(ValidationError):
        parse(**params)


def test_job_params_refuse_nan():
    with pytest.raises(ValidationError):
        JobParams.model_validate_json('{"prompt": "x", "guidance_scale": NaN}')


@pytest.mark.parametrize(("params", "field"), [
    ({"mode": "orbit"}, "prompt"),
    ({"mode": "orbit", "prompt": "x", "fps": 8}, "fps"),
    ({"mode": "video", "prompt": "x", "reconstruct": True}, "reconstruct"),
    ({"mode": "reconstruct", "prompt": "x"}, "prompt"),
    ({"mode": "reconstruct", "seed": 0}, "seed"),
    ({"mode": "reconstruct", "background": "#000000"}, "background"),
    ({"mode": "orbit", "prompt": "x", "mesh": {"face_budget": 5000}}, "mesh"),
])
def test_job_params_name_the_field_that_does_not_fit_the_mode(params, field):
    assert parse(**params).mode_problem()[0] == field


def test_mesh_matting_reaches_the_reconstruction_options():
    from droplet3d.api.runner import recon_options

    params = parse(mode="reconstruct", mesh={"matting": "colour", "face_budget": 500}).model_dump()
    options = recon_options(params)
    assert options.matting == "colour" and options.face_budget == 500


def test_job_params_accept_each_mode():
    assert parse(prompt="a cup", width=64, height=64, guidance_scale=6).mode_problem() is None
    assert parse(mode="video", prompt="a cup", fps=8, view_align=False).mode_problem() is None
    assert parse(mode="reconstruct", orbit={"elevation": 10, "direction": "cw"}).mode_problem() is None


# -- store ---------------------------------------------------------------------------------------------
def make_job(store: JobStore, seq: int, status: str = "succeeded", finished_at: float | None = 100.0) -> Job:
    job = Job(id=new_job_id() , mode="orbit", params={"prompt": "x"}, created_at=float(seq), seq=seq, status=status,
              finished_at=finished_at if status in ("succeeded", "failed", "cancelled") else None)
    store.commit(store.staging(), job)
    return job


def test_store_marks_running_jobs_interrupted_and_keeps_the_rest(tmp_path):
    store = JobStore(tmp_path)
    done, running, queued = make_job(store, 1), make_job(store, 2, "running"), make_job(store, 3, "queued")
    (tmp_path / ".staging-leftover").mkdir()  # a submission that crashed half-way
    (tmp_path / "20250101-000000-deadbeef").mkdir()  # a folder without job.json
    jobs, interrupted = JobStore(tmp_path).load_all()
    by_id = {j.id: j for j in jobs}
    assert [j.id for j in interrupted] == [running.id]
    assert by_id[running.id].status == "failed"
    assert by_id[running.id].error == {"code": "interrupted", "message": INTERRUPTED_MESSAGE}
    assert by_id[done.id].status == "succeeded" and by_id[queued.id].status == "queued"
    assert not (tmp_path / ".staging-leftover").exists()
    # The verdict was written back, atomically: a second start reads the same.
    assert json.loads((tmp_path / running.id / "job.json").read_text())["status"] == "failed"


def test_store_reads_warnings_as_code_and_message_also_from_old_plain_text_records(tmp_path):
    store = JobStore(tmp_path)
    new, old = make_job(store, 1), make_job(store, 2)
    new.warnings = [{"code": "reconstruction_failed", "message": "mesh failed (no_foreground: ...)"}]
    store.save(new)
    record = json.loads((tmp_path / old.id / "job.json").read_text())
    (tmp_path / old.id / "job.json").write_text(json.dumps({**record, "warnings": ["cameras are nominal"]}))
    by_id = {j.id: j for j in JobStore(tmp_path).load_all()[0]}
    assert by_id[new.id].warnings == new.warnings
    assert by_id[old.id].warnings == [{"code": "warning", "message": "cameras are nominal"}]


def test_store_refuses_to_delete_through_a_link(tmp_path):
    store = JobStore(tmp_path / "jobs")
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "keep.txt").write_text("x")
    link = store.root / "20250101-000000-00000000"
    link.symlink_to(victim)
    with pytest.raises(ValueError):
        store.remove(link.name)
    with pytest.raises(ValueError):
        store.path("../precious")
    assert (victim / "keep.txt").exists()


def test_retention_deletes_oldest_finished_jobs_only(tmp_path):
    store = JobStore(tmp_path)
    jobs = [make_job(store, 1), make_job(store, 2), make_job(store, 3, "running"), make_job(store, 4, "queued"),
            make_job(store, 5, finished_at=1000.0)]
    assert select_expired(jobs, {}, keep=1, max_age_s=None, max_bytes=None, now=1000.0) == [jobs[0].id, jobs[1].id]
    assert select_expired(jobs, {}, keep=10, max_age_s=500, max_bytes=None, now=1000.0) == [jobs[0].id, jobs[1].id]
    sizes = {j.id: 100 for j in jobs}
    assert select_expired(jobs, sizes, keep=10, max_age_s=None, max_bytes=350, now=0) == [jobs[0].id, jobs[1].id]
    assert select_expired(jobs, sizes, keep=10, max_age_s=None, max_bytes=10_000, now=0) == []


# -- progress --------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_eta_comes_from_measured_step_times():
    clock = FakeClock()
    tracker = ProgressTracker(stages_for("video"), history={"decoding": 3.0, "writing": 1.0}, clock=clock)
    tracker.update("loading")
    tracker.update("encoding")
    clock.t = 1.0
    tracker.update("denoising", 0, 10)
    fractions = []
    for step in range(1, 5):
        clock.t += 0.5  # every step takes 0.5 s
        tracker.update("denoising", step, 10)
        fractions.append(tracker.fraction)
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1
    # 6 steps left at 0.5 s, then decoding and writing as long as last time.
    assert tracker.eta() == pytest.approx(6 * 0.5 + 3.0 + 1.0)


def test_progress_has_no_eta_before_anything_is_measured():
    tracker = ProgressTracker(stages_for("orbit"), clock=FakeClock())
    tracker.update("loading")
    assert tracker.eta() is None


# -- uploads ---------------------------------------------------------------------------------------------
def test_image_pixel_cap_is_checked_from_the_header():
    # A PNG header claiming 100000x100000 pixels with no image data behind it: refused before decoding.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    for side in (5000, 100_000):  # over our cap; over Pillow's own bomb limit too
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        idat = chunk(b"IDAT", zlib.compress(b"\0" * 10))
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")
        with pytest.raises(ApiError) as err:
            check_image_bytes(data, "image", max_pixels=4096 * 4096)
        assert err.value.status == 413 and err.value.field == "image", err.value.message


@pytest.mark.parametrize("data", [b"", b"hello", png_bytes()[:60], b"\xff\xd8\xff" + b"\x00" * 50])
def test_broken_images_are_4xx(data):
    with pytest.raises(ApiError) as err:
        check_image_bytes(data, "image", max_pixels=10**6)
    assert 400 <= err.value.status < 500


def zip_of(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    buf.seek(0)
    return buf


EIGHT = {f"{k}.png": png_bytes() for k in range(8)}


@pytest.mark.parametrize(("entries", "status"), [
    ({"bomb.png": b"\0" * 50_000_000}, 413),  # 50 MB of zeros in a few kB
    ({f"{k}.png": png_bytes() for k in range(20)}, 413),  # more entries than allowed
    ({"../../etc/evil.png": png_bytes(), **EIGHT}, 400),
    ({"/abs.png": png_bytes(), **EIGHT}, 400),
    ({"b.txt": b"not an image", **EIGHT}, 415),
    ({"0.png": png_bytes((64, 64)), "z.png": png_bytes((32, 32)), **EIGHT}, 422),
    ({"a.png": png_bytes()}, 422),  # too few frames
])
def test_frame_zips_are_guarded(tmp_path, entries, status):
    with pytest.raises(ApiError) as err:
        save_frames_zip(zip_of(entries), tmp_path / "frames", "frames", max_frames=10, max_pixels=10**6,
                        max_unpacked=10_000_000)
    assert err.value.status == status
    assert not (tmp_path / "frames").exists()  # nothing written unless every frame passed


def test_frame_zip_orders_frames_by_number(tmp_path):
    numbers = [10, 2, 1, 30, 4, 5, 6, 7]
    entries = {f"f{k}.png": png_bytes(color=(k, 0, 0)) for k in numbers}
    assert save_frames_zip(zip_of(entries), tmp_path, "frames", max_frames=10, max_pixels=10**6,
                           max_unpacked=10**7) == 8
    stored = [(tmp_path / f"{i:04d}.png").read_bytes() for i in range(8)]
    assert stored == [entries[f"f{k}.png"] for k in sorted(numbers)]


def test_frame_zip_fixture_is_accepted(tmp_path):
    assert save_frames_zip(io.BytesIO(frames_zip(9)), tmp_path, "frames", max_frames=10, max_pixels=10**6,
                           max_unpacked=10**7) == 9


# -- artifacts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["frames/0000.png", "frames.zip", "mesh.glb", "transforms.json", "masks/0012.png"])
def test_artifact_whitelist_accepts(name):
    assert ARTIFACT_RE.match(name)


@pytest.mark.parametrize("name", ["../job.json", "job.json", "frames/../../x.png", "/etc/passwd", "frames/a.png",
                                  "upload/image.png", "frames.zip/..", "mesh.glb\n", "FRAMES.ZIP"])
def test_artifact_whitelist_refuses(name):
    assert not ARTIFACT_RE.match(name)


def test_frames_zip_is_reproducible_and_listed_with_hashes(tmp_path):
    (tmp_path / "frames").mkdir()
    for k in range(3):
        (tmp_path / "frames" / f"{k:04d}.png").write_bytes(png_bytes(color=(k, 1, 2)))
    (tmp_path / "job.json").write_text("{}")
    first = write_frames_zip(tmp_path).read_bytes()
    os.utime(tmp_path / "frames" / "0000.png", (1, 1))
    assert write_frames_zip(tmp_path).read_bytes() == first
    names = [a["name"] for a in list_artifacts(tmp_path)]
    assert names == ["frames.zip", "frames/0000.png", "frames/0001.png", "frames/0002.png"]
    with zipfile.ZipFile(tmp_path / "frames.zip") as archive:
        assert archive.namelist() == ["frames/0000.png", "frames/0001.png", "frames/0002.png"]
