"""Service benchmark on loopback: submit latency, status-poll latency under concurrent pollers while a job
runs, and artifact download throughput. Starts a real ``droplet3d serve`` on a tiny checkpoint.

    .venv/bin/python scripts/bench_server.py [--ckpt DIR] [--pollers 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

DROPLET3D = str(Path(sys.executable).with_name("droplet3d"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q / 100 * len(ordered)), len(ordered) - 1)]



def poll_latencies(url: str, job_id: str, pollers: int, seconds: float, interval: float) -> list[float]:
    """Milliseconds per status poll from ``pollers`` threads, each polling every ``interval`` s (0: back to back).

    Back to back, the figure is the service's throughput limit (every poller always has a request waiting);
    paced, it is the latency a client sees at that offered load.
    """
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=30) as own:
            while (t0 := time.perf_counter()) < stop:
                own.get(f"/v1/jobs/{job_id}").raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)
                time.sleep(max(0.0, interval - (time.perf_counter() - t0)))

    threads = [threading.Thread(target=poll) for _ in range(pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies

def start_server(ckpt: str, jobs_dir: str, device: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([DROPLET3D, "serve", "--port", "0", "--jobs-dir", jobs_dir, "--ckpt", ckpt, "--device",
                             device], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "listening on http://" in line:
            url = line.split("listening on ", 1)[1].split()[0]
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    while True:
        try:
            if httpx.get(url + "/v1/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)


def submit(client: httpx.Client, params: dict) -> tuple[str, float]:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (180, 90, 40)).save(buf, format="PNG")
    t0 = time.perf_counter()
    response = client.post("/v1/jobs", data={"params": json.dumps(params)},
                           files=[("image", ("in.png", buf.getvalue(), "image/png"))])
    elapsed = time.perf_counter() - t0
    response.raise_for_status()
    return response.json()["id"], elapsed


def wait(client: httpx.Client, job_id: str, pred) -> dict:
    while not pred(status := client.get(f"/v1/jobs/{job_id}").json()):
        time.sleep(0.05)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="checkpoint folder (default: a tiny one made now)")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--downloads", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds between one poller's polls in the paced measurement (the add-on polls every 0.5)")
    parser.add_argument("--long-steps", type=int, default=500, help="steps of the job polled while it runs")
    parser.add_argument("--device", default="cpu", help="where the server runs the model (cpu, cuda)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-server-")
    ckpt = args.ckpt or str(Path(tmp) / "tiny")
    if not args.ckpt:
        subprocess.run([DROPLET3D, "make-tiny-checkpoint", ckpt], check=True, capture_output=True)
    proc, url = start_server(ckpt, str(Path(tmp) / "jobs"), args.device)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            # A finished job with a few MB of frames to download (noise frames from the tiny model).
            done, _ = submit(client, {"prompt": "bench", "width": 256, "height": 256, "num_frames": 9, "steps": 1})
            finished = wait(client, done, lambda s: s["status"] in ("succeeded", "failed"))
            assert finished["status"] == "succeeded", finished
            # A long job to poll while it runs, then submissions queued behind it.
            long_id, _ = submit(client, {"prompt": "long", "width": 64, "height": 64, "num_frames": 9,
                                            "steps": args.long_steps})
            wait(client, long_id, lambda s: s["stage"] == "denoising")
            closed_loop = poll_latencies(url, long_id, args.pollers, args.seconds, 0.0)
            paced = poll_latencies(url, long_id, args.pollers, args.seconds, args.interval)
            submits = [submit(client, {"prompt": f"queued {k}", "steps": 1})[1] for k in range(20)]
            for job in client.get("/v1/jobs").json()["jobs"]:
                if job["status"] in ("queued", "running"):
                    client.delete(f"/v1/jobs/{job['id']}")
            artifact = next(a for a in finished["artifacts"] if a["name"] == "frames.zip")
            t0 = time.perf_counter()
            total = 0
            for _ in range(args.downloads):
                total += len(client.get(artifact["url"]).content)
            download_s = time.perf_counter() - t0
        for label, ms in (("back to back", closed_loop), (f"every {args.interval:g} s each", paced)):
            print(f"status polls, {args.pollers} concurrent pollers {label}, while a job ran: {len(ms)} polls in "
                  f"{args.seconds:.0f} s, p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
                  f"max {max(ms):.1f} ms")
        sub = [v * 1000 for v in submits]
        print(f"submit (256x256 PNG, queued): p50 {statistics.median(sub):.1f} ms, max {max(sub):.1f} ms over 20")
        print(f"download frames.zip ({artifact['size'] / 1e6:.1f} MB) x{args.downloads}: "
              f"{total / 1e6 / download_s:.0f} MB/s")
    finally:
        proc.terminate()
        proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
