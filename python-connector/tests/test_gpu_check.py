"""scripts/gpu-check, the one command of the GPU machine, on a broken bundle: it stops with one
line saying what is missing and where, and still writes its log and summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gpu_check(bundle: Path, out: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPU_CHECK_BUNDLE": str(bundle), "GPU_CHECK_WORK": str(tmp / "work")}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "files, expected",
    [
        ([], "no kvtier wheel in {bundle} (run scripts/gpu-bundle where Java is)"),
        (
            ["kvtier-0-py3-none-any.whl", "jpype1-0-cp312.whl", "packaging-0.whl"],
            "no java-runtime.tar.xz in {bundle}",
        ),
        (
            ["kvtier-0-py3-none-any.whl", "jpype1-0-cp312.whl", "packaging-0.whl",
             "java-runtime.tar.xz"],
            "cannot unpack {bundle}/java-runtime.tar.xz",
        ),
    ],
    ids=["empty", "no-runtime", "corrupt-runtime"],
)  # fmt: skip
def test_a_broken_bundle_stops_the_check_in_one_line(tmp_path, files, expected) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in files:
        (bundle / name).write_bytes(b"not what it claims to be")
    out = tmp_path / "out"
    r = gpu_check(bundle, out, tmp_path)
    assert r.returncode == 1
    why = expected.format(bundle=bundle)
    failed = [line for line in r.stdout.splitlines() if line.startswith("gpu-check: setup failed")]
    assert len(failed) == 1 and why in failed[0], r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert why in summary["setup"]["status"]
    assert why in (out / "gpu-check.log").read_text()
