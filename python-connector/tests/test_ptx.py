"""The CUDA kernels that ship in the wheel assemble with CUDA 12.0's ptxas for every GPU generation
kvtier targets (no GPU needed): what the driver's JIT does when kvtier loads them."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

import kvtier

PTX = "io/kvtier/cuda/kv_copy.ptx"


def _ptxas() -> Path:
    try:
        import nvidia.cuda_nvcc  # the nvidia-cuda-nvcc-cu12 wheel (scripts/test installs 12.0)
    except ImportError:
        pytest.skip("nvidia-cuda-nvcc-cu12 is not installed (scripts/test installs it)")
    return Path(next(iter(nvidia.cuda_nvcc.__path__))) / "bin" / "ptxas"


def _shipped_ptx(tmp_path: Path) -> Path:
    lib = Path(kvtier.__file__).parent / "lib"
    for jar in sorted(lib.glob("kvtier-core*.jar")) + sorted(lib.glob("*.jar")):
        with zipfile.ZipFile(jar) as z:
            if PTX in z.namelist():
                out = tmp_path / "kv_copy.ptx"
                out.write_bytes(z.read(PTX))
                return out
    raise AssertionError(f"no jar in {lib} holds {PTX}")


@pytest.mark.parametrize("arch", ["sm_70", "sm_80", "sm_90"])
def test_shipped_ptx_assembles_with_cuda_12_0(arch: str, tmp_path: Path) -> None:
    ptxas = _ptxas()
    ptx = _shipped_ptx(tmp_path)
    run = subprocess.run(
        [str(ptxas), f"-arch={arch}", "-v", str(ptx), "-o", str(tmp_path / f"{arch}.cubin")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    version = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True).stdout
    assert "release 12.0" in version
    # every kernel compiled, and none spills registers to local memory
    assert run.stderr.count("Compiling entry function") == 10, run.stderr
    assert "bytes spill stores" not in run.stderr or " 0 bytes spill stores" in run.stderr
