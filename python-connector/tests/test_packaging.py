"""What the installed wheel carries: the listed jars, JCuda's driver natives and nothing more."""

from __future__ import annotations

import zipfile

from kvtier import _jvm


def test_installed_jars_are_complete_and_driver_only():
    """Every jar in jars.txt is installed; CUDA natives are the driver API's alone."""
    names = (_jvm.LIB_DIR / _jvm.JARS_MANIFEST).read_text().split()
    assert any(n.startswith("kvtier-core-") for n in names)
    natives = []
    for name in names:
        with zipfile.ZipFile(_jvm.LIB_DIR / name) as jar:
            natives += [e for e in jar.namelist() if e.endswith(".so")]
    cuda = [n for n in natives if "JCuda" in n or "JNv" in n]
    assert cuda == ["lib/libJCudaDriver-12.6.0-linux-x86_64.so"]
