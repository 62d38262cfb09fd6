"""Hundreds of malformed requests: each gets a 4xx (JSON-shaped where the app answers) and the server stays healthy."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import zipfile
import zlib

import pytest
from api_helpers import disc_frames, png_bytes, submit, wait_for, zip_bytes

VALID = {"prompt": "a cup", "width": 32, "height": 32, "num_frames": 1, "steps": 1}

BAD_JSON = ["", " ", "{", "}", "[]", "[1, 2]", "null", "1", "true", '"text"', "{'prompt': 'x'}", '{"prompt": }',
            '{"prompt": "x",}', '{"prompt": "x"} trailing', '{"prompt": "x", "steps": NaN}',
            '{"prompt": "x", "guidance_scale": Infinity}', '{"prompt": "x", "steps": 1e999}', "[" * 5000 + "]" * 5000,
            '{"prompt": "x", "prompt": 5}', "\ufeff{}", '{"prompt": "\\ud800"}', "{\"prompt\": \"x\"\x00}",
            '{"prompt": "x", "seed": 18446744073709551616}', '{"a": ' * 200 + "1" + "}" * 200, "💥", "<xml/>"]

BAD_FIELDS = {
    "mode": ["sculpt", 1, None, "", "ORBIT", ["orbit"]],
    "prompt": ["", "   ", 1, [], {}, "x" * 5000, None, True],
    "negative_prompt": [1, [], "  ", "y" * 5000],
    "seed": [-1, 2**64, "42", 1.5, True, []],
    "steps": [0, -1, 501, "2", 2.5, True, 10**30],
    "guidance_scale": [-1, 51, "6", True, [], {}],
    "width": [65, 0, -16, 4096, "64", 64.0, 10**30, True, []],
    "height": [17, 8, 2064, "32", 32.5, False],
    "num_frames": [0, 258, "5", 5.5, -3],
    "fps": [8, 0, "8"],  # fps is refused in orbit mode whatever its value
    "view_align": ["true", 1, 0, []],
    "reconstruct": ["yes", 1, {}],
    "mesh": [{"resolution": 16}, {"face_budget": 10}, {"texture_size": 300}, {"matting": "magic"}, {"unknown": 1}, [],
             "x"],
    "orbit": [{"elevation": 90}, {"fov": 0}, {"radius": 0}, {"direction": "up"}, {"start_azimuth": 720},
              {"closed": "yes"}, {"x": 1}, "ccw"],
    "bogus": [1], "Prompt": ["x"], "__proto__": [{}], "params": [{}], "prompt ": ["x"],
}
VIDEO_BAD = [{"mode": "video", "prompt": "x", "fps": 0}, {"mode": "video", "prompt": "x", "fps": 121},
             {"mode": "video", "prompt": "x", "view_align": True},
             {"mode": "video", "prompt": "x", "reconstruct": True},
             {"mode": "video", "prompt": "x", "mesh": {}}, {"mode": "video"}, {"mode": "reconstruct", "prompt": "x"},
             {"mode": "reconstruct", "steps": 2}, {"mode": "reconstruct", "fps": 8},
             {"mode": "reconstruct", "seed": 1}]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 8))
            + png_chunk(b"IEND", b""))


GOOD_PNG = png_bytes((32, 32))
BAD_IMAGES = [b"", b"x", GOOD_PNG[:20], GOOD_PNG[: len(GOOD_PNG) // 2], GOOD_PNG[:8], b"GIF89a" + b"\0" * 64,
              b"BM" + b"\0" * 64,
              b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"<html>hi</html>", b"\xff\xd8\xff\xe0" + b"\0" * 16,
              b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 8, png_claiming(100_000, 100_000), png_claiming(0, 10),
              png_claiming(8000, 8000), zip_bytes({"a.png": GOOD_PNG}), bytes(range(256)) * 4,
              b"\x89PNG\r\n\x1a\n" + b"\xff" * 100]


def deflate_bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0000.png", b"\0" * size)
    return buf.getvalue()


def zip_lying_about_size() -> bytes:
    """A stored entry whose headers claim 10 bytes while 1 MB follows."""
    data = zip_bytes({f"{k}.png": GOOD_PNG for k in range(8)} | {"z.png": b"\0" * 1_000_000})
    return data.replace(struct.pack("<I", 1_000_000), struct.pack("<I", 10))


FRAMES = disc_frames(9, size=32)
EIGHT = {f"{k}.png": f for k, f in enumerate(FRAMES[:8])}
BAD_ZIPS = [deflate_bomb(30_000_000), zip_bytes({f"{k}.png": GOOD_PNG for k in range(600)}),
            zip_bytes({"../../../etc/cron.d/evil.png": GOOD_PNG, **EIGHT}),
            zip_bytes({"/abs/0.png": GOOD_PNG, **EIGHT}),
            zip_bytes({"C:\\win\\0.png": GOOD_PNG, **EIGHT}), zip_bytes({"note.txt": b"hello", **EIGHT}),
            zip_bytes({"big.png": png_bytes((64, 64)), **EIGHT}), zip_bytes({"0.png": GOOD_PNG}), zip_bytes({}),
            zip_bytes({"inner.zip": zip_bytes(EIGHT), **EIGHT}), zip_bytes(EIGHT)[:-30], zip_bytes(EIGHT)[:100],
            b"PK\x03\x04" + b"\0" * 200, zip_lying_about_size(), zip_bytes({f"{k}.png": b"" for k in range(9)})]
BAD_VIDEOS = [b"", b"\0\0\0\x18ftypisom" + b"\0" * 100, b"\x1a\x45\xdf\xa3" + b"\0" * 64,
              b"RIFF\0\0\0\0AVI " + b"\0" * 64, b"not a video at all", GOOD_PNG]


def multipart_cases() -> list[tuple[str, dict]]:
    """(label, httpx request kwargs) for POST /v1/jobs."""
    cases: list[tuple[str, dict]] = []
    image = [("image", ("in.png", GOOD_PNG, "image/png"))]
    for raw in BAD_JSON:
        cases.append((f"json {raw[:30]!r}", {"data": {"params": raw}, "files": image}))
    for field, values in BAD_FIELDS.items():
        for value in values:
            cases.append((f"{field}={value!r:.40}", {"data": {"params": json.dumps({**VALID, field: value})},
                                                     "files": image}))
    for params in VIDEO_BAD:
        cases.append((f"mode mix {params}", {"data": {"params": json.dumps(params)}, "files": image}))
    for k, data in enumerate(BAD_IMAGES):
        cases.append((f"bad image {k}", {"data": {"params": json.dumps(VALID)},
                                         "files": [("image", ("in.png", data, "image/png"))]}))
    recon = {"params": json.dumps({"mode": "reconstruct"})}
    for k, data in enumerate(BAD_ZIPS):
        cases.append((f"bad zip {k}", {"data": recon, "files": [("frames", ("f.zip", data, "application/zip"))]}))
    for k, data in enumerate(BAD_VIDEOS):
        cases.append((f"bad video {k}", {"data": recon, "files": [("video", ("v.mp4", data, "video/mp4"))]}))
    frame_files = [("frames", (f"{k}.png", f, "image/png")) for k, f in enumerate(FRAMES)]
    cases += [
        ("no params", {"files": image}),
        ("no image", {"data": {"params": json.dumps(VALID)}}),
        ("nothing", {}),
        ("params as a file", {"files": [("params", ("p.json", json.dumps(VALID).encode(), "application/json")),
                                        *image]}),
        ("image as text", {"data": {"params": json.dumps(VALID), "image": "not a file"}}),
        ("misnamed image", {"data": {"params": json.dumps(VALID)},
                            "files": [("img", ("in.png", GOOD_PNG, "image/png"))]}),
        ("frames in orbit mode", {"data": {"params": json.dumps(VALID)}, "files": [*image, *frame_files]}),
        ("video in orbit mode", {"data": {"params": json.dumps(VALID)},
                                 "files": [*image, ("video", ("v.mp4", b"x", "video/mp4"))]}),
        ("reconstruct with an image", {"data": recon, "files": image}),
        ("reconstruct with nothing", {"data": recon}),
        ("reconstruct with frames and video", {"data": recon, "files": [*frame_files,
                                                                        ("video", ("v.mp4", b"x", "video/mp4"))]}),
        ("reconstruct with too few frames", {"data": recon, "files": frame_files[:3]}),
        ("reconstruct with mixed sizes", {"data": recon, "files": [
            *frame_files, ("frames", ("x.png", png_bytes((64, 64)), "image/png"))]}),
        ("json body", {"json": VALID}),
        ("urlencoded", {"data": {"params": json.dumps(VALID)}}),
        ("plain text", {"content": b"hello", "headers": {"content-type": "text/plain"}}),
        ("bad boundary", {"content": b"--x\r\nbroken",
                          "headers": {"content-type": "multipart/form-data; boundary=zz"}}),
        ("no boundary", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}),
        ("huge params field", {"data": {"params": json.dumps({**VALID, "prompt": "p" * 300_000})}, "files": image}),
        ("two params", {"data": {"params": [json.dumps(VALID), json.dumps(VALID)]}, "files": image}),
    ]
    return cases


def url_cases(job_id: str) -> list[tuple[str, str]]:
    base = f"/v1/jobs/{job_id}"
    cases = [("GET", p) for p in [
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/%2e%2e", "/v1/jobs/" + "x" * 5000,
        "/v1/jobs/20250101-000000-0000000g", "/v1/jobs/20250101-000000-00000000%0a", "/v1/jobs/%00",
        "/v1/jobs/ünïcode", "/v1/jobs/20250101-000000-00000000/events",
        f"{base}/artifacts/job.json", f"{base}/artifacts/..%2fjob.json", f"{base}/artifacts/%2e%2e/%2e%2e/etc/passwd",
        f"{base}/artifacts/upload/image.png", f"{base}/artifacts/frames/../job.json",
        f"{base}/artifacts/frames/%00.png", f"{base}/artifacts/" + "a" * 3000, f"{base}/artifacts/",
        f"{base}/artifacts/mesh.glb", f"{base}/artifacts/FRAMES.ZIP",
        f"{base}/artifacts/frames/9999.png", f"{base}/artifacts/manifest.json%20", f"{base}/nope", "/v1", "/v2/health",
        "/v1/health/extra", "/.env", "/v1/jobs/" + job_id + "/artifacts/frames//0000.png",
    ]]
    cases += [(m, p) for m in ("PUT", "PATCH") for p in ("/v1/jobs", base, f"{base}/artifacts/orbit.mp4", "/v1/health")]
    cases += [("DELETE", p) for p in ("/v1/jobs", "/v1/health", f"{base}/artifacts/orbit.mp4", "/v1/jobs/bad")]
    cases += [("POST", p) for p in (base, f"{base}/events", "/v1/health")]
    return cases


RANGE_HEADERS = ["bytes=999999999-", "bytes=50-10", "bytes=-0", "items=0-1", "bytes=abc", "bytes=0-1,a-b", "bytes="]
RAW_REQUESTS = [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\n" + b"X: " + b"a" * 100_000 + b"\r\n\r\n",
                b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 1000000000000\r\n\r\n--b\r\n",
                b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]


@pytest.fixture(scope="module")
def finished_job(model_server):
    with model_server.client() as client:
        job_id = submit(client, {**VALID, "mode": "video", "prompt": "fuzz target"}).json()["id"]
        assert wait_for(client, job_id)["status"] == "succeeded"
    return job_id


def assert_4xx(response, label: str) -> None:
    assert 400 <= response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
    if response.headers.get("content-type", "").startswith("application/json"):
        error = response.json()["error"]
        assert error["code"] and error["message"], label


def test_two_hundred_malformed_requests_get_4xx_and_the_server_stays_healthy(model_server, finished_job):
    sent = 0
    with model_server.client() as client:
        for label, kwargs in multipart_cases():
            assert_4xx(client.post("/v1/jobs", **kwargs), label)
            sent += 1
        for method, path in url_cases(finished_job):
            assert_4xx(client.request(method, path), f"{method} {path[:80]}")
            sent += 1
        for header in RANGE_HEADERS:
            response = client.get(f"/v1/jobs/{finished_job}/artifacts/orbit.mp4", headers={"Range": header})
            assert response.status_code in (200, 206) or 400 <= response.status_code < 500, header
            sent += 1
        host, port = model_server.url.removeprefix("http://").rsplit(":", 1)
        for raw in RAW_REQUESTS:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(raw)
                reply = sock.recv(100)
            assert reply == b"" or reply.split(b" ")[1].startswith(b"4"), (raw[:40], reply)
            sent += 1
        assert sent >= 200, sent
        # Healthy: health answers, nothing was queued by the fuzz, and a real job still runs to the end.
        health = client.get("/v1/health").json()
        assert health["status"] == "ok" and health["queue_length"] == 0
        job_id = submit(client, {**VALID, "mode": "video", "prompt": "after the storm"}).json()["id"]
        assert wait_for(client, job_id)["status"] == "succeeded"
    # No error escaped the handlers. The one known exception: for a request whose framing uvicorn's h11 parser
    # already refused with its own 400, the app's later answer cannot be sent (LocalProtocolError); the client
    # has its 400 and the connection is closed. uvicorn with httptools does not do this.
    raised = [line for line in model_server.log().splitlines() if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    assert all(line.startswith("h11._util.LocalProtocolError") for line in raised), raised
