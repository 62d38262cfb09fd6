"""The generation benchmark runs its profiles mode end to end at tiny size, view alignment included."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from engine_helpers import REPO


def test_profiles_benchmark_times_each_variant_and_the_view_alignment(tmp_path):
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "bench_generate.py"), "--size", "tiny",
                    "--compile-backend", "eager", "--profiles", "faithful,cfg-trunc", "--step-scale", "0.1",
                    "--json", str(out)], check=True, cwd=REPO, timeout=300, capture_output=True)
    rows = {row["variant"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"faithful", "cfg-trunc"}
    for row in rows.values():
        assert row["align_s"] > 0 and row["projected_with_align_s"] > row["projected_s"]
        assert row["s_per_step"] > 0 and row["steps_run"] == 5 and row["steps_full"] == 50
    assert rows["faithful"]["psnr_db"] == math.inf and rows["faithful"]["uncond_passes"] == 5
    # truncation drops the last fifth of the unconditional passes, and that moves the frames
    assert rows["cfg-trunc"]["uncond_passes"] == 4 and rows["cfg-trunc"]["psnr_db"] < math.inf
