"""Benchmark the Blender add-on: import time of a full-size job, and main-thread stalls while jobs run.

    .venv-blender/bin/python scripts/bench_blender.py [--num-frames 85 --size 512 --sphere 6 --repeat 3]

1. Import: a synthetic finished job (85 frames of 512², transforms.json, a GLB of 20·4^sphere faces)
   imported into a fresh scene ``repeat`` times (first = cold, images not cached by the OS yet).
2. Stalls: a live ``droplet3d serve`` with a tiny checkpoint runs an orbit job (many denoising steps,
   cancelled near the end) and a reconstruct job (downloads); meanwhile the add-on's timer callback
   (``runtime.pump``) is called every 10 ms as ``bpy.app.timers`` would, and each call is timed.
   Auto-import is off here: that cost is figure 1. The Generate operator's own return time is
   timed with a file input (no render).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_BIN = REPO / ".venv" / "bin"
sys.path.insert(0, str(REPO))


def make_job(out: Path, frames: int, size: int, sphere: int, rendered: bool = False) -> Path:
    here = REPO / "tests" / "blender"
    subprocess.run([str(SERVER_BIN / "python"), str(here / "make_job_fixture.py"), str(out),
                    "--num-frames", str(frames), "--size", str(size), "--sphere", str(sphere), "--id", out.name],
                   check=True, timeout=600)
    if rendered:
        subprocess.run([sys.executable, str(here / "render_job_frames.py"), str(out)], check=True, timeout=600,
                       capture_output=True)
    return out


def bench_import(job: Path, repeat: int) -> tuple[list[float], float]:
    """Import times, and the time to decode every frame afterwards (Blender loads image pixels lazily)."""
    import bpy

    from droplet_blender import importer

    times = []
    for _ in range(repeat):
        bpy.ops.wm.read_homefile(use_empty=True)
        t0 = time.perf_counter()
        coll = importer.import_job(job, source={"centre": [0, 0, 0], "size": 1.0})
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for obj in coll.all_objects:
        if obj.type == "MESH" and obj.active_material and "Frame" in obj.active_material.node_tree.nodes:
            obj.active_material.node_tree.nodes["Frame"].image.pixels[0]  # forces the decode
    return times, time.perf_counter() - t0


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    import socket

    subprocess.run([str(SERVER_BIN / "droplet3d"), "make-tiny-checkpoint", str(tmp / "ckpt")], check=True,
                   capture_output=True, timeout=600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(SERVER_BIN / "droplet3d"), "serve", "--ckpt", str(tmp / "ckpt"), "--port", str(port),
                             "--jobs-dir", str(tmp / "jobs")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/v1/health", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def bench_stalls(url: str, frames_dir: Path, tmp: Path, steps: int) -> dict:
    import bpy

    import droplet_blender
    from droplet_blender import runtime

    droplet_blender.register()  # as a plain module, so settings() reads $DROPLET_URL instead of preferences
    os.environ["DROPLET_URL"] = url
    image = frames_dir / "0000.png"
    scene = bpy.context.scene
    props = scene.droplet
    props.source, props.filepath, props.prompt = "FILE", str(image), "a box with a ball on top"
    props.custom_size, props.width, props.height, props.frames, props.steps = True, 64, 64, 9, steps
    props.reconstruct = False
    t0 = time.perf_counter()
    bpy.ops.droplet.generate()
    generate_s = time.perf_counter() - t0
    runtime.auto_import.clear()
    recon = droplet_blender.submit(mode="reconstruct", frames=frames_dir, server=url, download_dir=tmp / "dl",
                                   orbit={"elevation": 20.0, "fov": 45.0}, mesh={"resolution": 64})
    orbit_key = bpy.context.window_manager.droplet_jobs[0].key if len(bpy.context.window_manager.droplet_jobs) else None
    stalls, cancelled = [], False
    start = time.perf_counter()
    while time.perf_counter() - start < 600:
        t = time.perf_counter()
        runtime.pump()
        stalls.append(time.perf_counter() - t)
        orbit = runtime.latest.get(orbit_key)
        if orbit and orbit.step >= steps - 5 and not cancelled:
            runtime.manager.cancel(orbit_key)
            cancelled = True
        if not runtime.manager.busy() and runtime.manager.events.empty():
            break
        time.sleep(0.01)
    runtime.pump()
    states = {k: (s.status, s.error) for k, s in runtime.latest.items()}
    return {"generate_s": generate_s, "stalls": stalls, "states": states, "wall_s": time.perf_counter() - start,
            "recon_key": recon.key}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-frames", type=int, default=85)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sphere", type=int, default=6, help="GLB icosphere subdivisions (6: 81,920 faces)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150, help="denoising steps of the orbit job in the stall test")
    parser.add_argument("--skip-stalls", action="store_true")
    args = parser.parse_args()
    import bpy

    print(f"# Blender {bpy.app.version_string} (bpy wheel), Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        job = make_job(tmp / "droplet-bench", args.num_frames, args.size, args.sphere)
        times, decode = bench_import(job, args.repeat)
        faces = 20 * 4 ** args.sphere
        print(f"import {args.num_frames} frames {args.size}² + GLB ({faces} faces): first {times[0]:.2f} s, "
              f"median {statistics.median(times):.2f} s over {len(times)} (target ≤ 3 s)")
        print(f"  then decoding all {args.num_frames} frame images (lazy in Blender, paid on first display): "
              f"{decode:.2f} s")
        if args.skip_stalls:
            return 0
        bpy.ops.wm.read_homefile(use_empty=True)
        orbit = make_job(tmp / "orbit", 12, 64, 0, rendered=True)
        proc, url = start_server(tmp)
        try:
            result = bench_stalls(url, orbit / "frames", tmp, args.steps)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        stalls = sorted(result["stalls"])
        p99 = stalls[int(0.99 * (len(stalls) - 1))]
        print(f"Generate operator returned in {result['generate_s'] * 1000:.1f} ms (file input, no render)")
        print(f"main-thread timer callback while 2 jobs ran for {result['wall_s']:.1f} s: {len(stalls)} calls, "
              f"longest {stalls[-1] * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, median "
              f"{statistics.median(stalls) * 1000:.3f} ms (target ≤ 50 ms)")
        for key, (status, error) in result["states"].items():
            print(f"  job {key}: {status} {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
