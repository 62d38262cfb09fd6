"""Scale-out benchmark on the CPU with a tiny checkpoint: jobs per minute with 1 and 2 workers behind a Redis broker
(each worker one CPU thread) for a tiny and a small job, and submit→start latency through the broker against the
embedded server.
Starts a real redis-server, fronts and workers on 127.0.0.1; prints the machine's load, since other work on the
cores changes every figure.

    .venv/bin/python scripts/bench_scale.py [--jobs 32] [--rounds 3] [--sizes tiny,small] [--latency-jobs 10]

Throughput is measured in rounds that alternate 1 and 2 workers, and the ratio is read per round (its median and
range are printed): a shared machine's load drifts over minutes, and one pair of runs can land on either side of
it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "api"))  # the tests' process helpers

from api_helpers import DROPLET3D, FAST, Server, submit, wait_for
from scale_helpers import HEARTBEAT, RedisServer, Worker

SIZES = {  # tiny: the tests' job, where the fixed cost per job (upload, broker, video encode) weighs most;
    # small: one where the model's work dominates, as it does in every real job
    "tiny": FAST,
    "small": {"width": 128, "height": 128, "num_frames": 9, "steps": 4},
}
POLL_SECONDS = 0.1


def run_jobs(server: Server, count: int, seed0: int, size: dict = FAST) -> list[dict]:
    """Submit ``count`` jobs, then wait for them in order, one status request per poll every POLL_SECONDS (polling
    faster, or every job at once, would load the front more than the jobs do)."""
    with server.client() as client:
        ids = [submit(client, {"prompt": f"bench {k}", **size, "seed": seed0 + k}).json()["id"] for k in range(count)]
        finals = [wait_for(client, job_id, timeout=1800, interval=POLL_SECONDS) for job_id in ids]
    failed = [f for f in finals if f["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {failed[0]['error']}")
    return finals


CEILING_WORK = """
import time, numpy as np, torch
torch.set_num_threads(1)
a, started = torch.randn(192, 192), time.perf_counter()
for k in range(2500):
    a = torch.tanh(a @ a.T / 192.0)
    sum(i * i for i in range(200))  # interpreter work, as between a job's tensor operations
print(time.perf_counter() - started)
"""


def hardware_ceiling() -> float:
    """The cores' own scaling: the throughput of two copies of one single-threaded workload run at once against
    one alone (1.0 would be one core; 2.0 two independent ones)."""
    def run(copies: int) -> float:
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", CEILING_WORK], stdout=subprocess.DEVNULL)
                 for _ in range(copies)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - started

    run(1)  # warm the file cache
    return 2 * run(1) / run(2)


def throughput(root: Path, ckpt: Path, workers: int, jobs: int, size: str) -> tuple[float, set[str]]:
    """Jobs per minute through a front and ``workers`` workers, after one warm-up job per worker."""
    broker = RedisServer().start()
    jobs_dir = root / f"jobs-{size}-{workers}"
    front = Server(jobs_dir, "--broker", broker.url, "--heartbeat", HEARTBEAT).start()
    procs = [Worker(broker.url, jobs_dir, ckpt, f"w{k}").start() for k in range(workers)]
    try:
        run_jobs(front, 2 * workers, 1000, SIZES[size])  # loads the model in each worker
        started = time.monotonic()
        finals = run_jobs(front, jobs, 0, SIZES[size])
        elapsed = time.monotonic() - started
    finally:
        for proc in (*procs, front):
            proc.kill()
        broker.stop()
    return jobs / elapsed * 60, {f["worker"] for f in finals}


def start_latencies(server: Server, count: int) -> list[float]:
    """Milliseconds from a job's creation (the front) to its start (the worker), one job at a time on idle workers."""
    run_jobs(server, 1, 2000)  # warm
    latencies = []
    for k in range(count):
        final = run_jobs(server, 1, 3000 + k)[0]
        latencies.append((final["started_at"] - final["created_at"]) * 1000)
    return latencies


def latency(root: Path, ckpt: Path, count: int) -> dict[str, list[float]]:
    out = {}
    embedded = Server(root / "lat-embedded", "--ckpt", str(ckpt), "--device", "cpu").start()
    try:
        out["embedded"] = start_latencies(embedded, count)
    finally:
        embedded.kill()
    broker = RedisServer().start()
    front = Server(root / "lat-broker", "--broker", broker.url, "--heartbeat", HEARTBEAT).start()
    worker = Worker(broker.url, root / "lat-broker", ckpt, "lat").start()
    try:
        out["broker"] = start_latencies(front, count)
    finally:
        worker.kill()
        front.kill()
        broker.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32, help="timed jobs per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (1 then 2 workers) per job size")
    parser.add_argument("--sizes", type=lambda v: v.split(","), default=list(SIZES),
                        help=f"comma-separated job sizes from {', '.join(SIZES)}")
    parser.add_argument("--latency-jobs", type=int, default=10, help="jobs per submit→start latency run")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = root / "ckpt"
        subprocess.run([DROPLET3D, "make-tiny-checkpoint", str(ckpt)], check=True, capture_output=True)
        rates = {(size, n): [] for size in args.sizes for n in (1, 2)}
        for _ in range(args.rounds):
            for size in args.sizes:
                for n in (1, 2):
                    rates[size, n].append(throughput(root, ckpt, n, args.jobs, size))
        lat = latency(root, ckpt, args.latency_jobs)
        ceiling = hardware_ceiling()
    load_after = os.getloadavg()

    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) before {load_before[0]:.1f}/"
          f"{load_before[1]:.1f}/{load_before[2]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/"
          f"{load_after[2]:.1f}")
    print(f"jobs per minute (median of {args.rounds} rounds), {args.jobs} timed jobs per run, one CPU thread per "
          "worker; the ratio per round")
    print(f"{'CPU job':36}{'1 worker':>10}{'2 workers':>11}{'ratio':>7}{'range':>13}{'workers used':>14}")
    for size in args.sizes:
        p = SIZES[size]
        one, two = rates[size, 1], rates[size, 2]
        ratios = [b[0] / a[0] for a, b in zip(one, two, strict=True)]
        used = f"{max(len(r[1]) for r in one)} / {min(len(r[1]) for r in two)}"
        label = f"{size} ({p['width']}x{p['height']}, {p['num_frames']} frames, {p['steps']} steps)"
        print(f"{label:36}{statistics.median(r[0] for r in one):10.1f}{statistics.median(r[0] for r in two):11.1f}"
              f"{statistics.median(ratios):7.2f}{f'{min(ratios):.2f}–{max(ratios):.2f}':>13}{used:>14}")
    print(f"{'the cores alone':36}{'':10}{'':11}{ceiling:7.2f}   (two single-threaded copies of one workload at once"
          " against one)")
    print(f"submit→start latency, ms ({args.latency_jobs} jobs, idle worker)")
    print(f"{'':24}{'embedded':>12}{'broker':>12}{'overhead':>10}")
    for name, pick in (("median", statistics.median), ("p90", lambda v: sorted(v)[int(0.9 * (len(v) - 1))]),
                       ("max", max)):
        e, b = pick(lat["embedded"]), pick(lat["broker"])
        print(f"{name:24}{e:12.1f}{b:12.1f}{b - e:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
