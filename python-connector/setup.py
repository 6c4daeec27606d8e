"""Builds the kvtier wheel: runs the Maven build and bundles the Java core's jars.

The wheel carries ``kvtier/lib/``: ``kvtier-core-*.jar`` and the runtime jars Maven copies to
``java-core/target/lib`` (JCuda with its driver-API native library only), plus ``jars.txt``, the
list ``kvtier._jvm`` checks at start-up. Building from a clone runs ``./mvnw package`` with the JDK
that ``scripts/jdk-home`` finds. A source tree without the Maven project (an sdist) must already
hold the jars in ``src/kvtier/lib``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PREBUILT_LIB = HERE / "src" / "kvtier" / "lib"


def _run_maven() -> list[Path]:
    """Builds java-core (tests skipped: the test command runs them) and returns its jars."""
    try:
        java_home = subprocess.run(
            ["bash", str(REPO / "scripts" / "jdk-home")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except subprocess.CalledProcessError as e:
        sys.exit(f"kvtier: cannot build the Java core:\n{e.stderr}")
    env = dict(os.environ, JAVA_HOME=java_home)
    cmd = [
        str(REPO / "mvnw"),
        "-B",
        "-q",
        "-f",
        str(REPO / "pom.xml"),
        "-pl",
        "java-core",
        "-am",
        "package",
        "-DskipTests",
        "-Dspotless.check.skip=true",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            "kvtier: the Maven build of the Java core failed "
            f"(JAVA_HOME={java_home}):\n{result.stdout}\n{result.stderr}"
        )
    target = REPO / "java-core" / "target"
    core = sorted(
        p
        for p in target.glob("kvtier-core-*.jar")
        if not p.name.endswith(("-sources.jar", "-tests.jar"))
    )
    if len(core) != 1:
        sys.exit(
            f"kvtier: expected one kvtier-core jar in {target}, found {[p.name for p in core]}"
        )
    return core + sorted((target / "lib").glob("*.jar"))


def _jars() -> list[Path]:
    if (REPO / "pom.xml").is_file() and (REPO / "java-core").is_dir():
        return _run_maven()
    jars = sorted(PREBUILT_LIB.glob("*.jar"))
    if not jars:
        sys.exit(
            "kvtier: no Maven project next to this source tree and no prebuilt jars in "
            f"{PREBUILT_LIB}; build the wheel from a clone of the repository."
        )
    return jars


class BuildPyWithJars(build_py):
    """build_py that also places the Java core's jars under kvtier/lib."""

    def run(self) -> None:
        super().run()
        jars = _jars()
        lib = Path(self.build_lib) / "kvtier" / "lib"
        if lib.exists():
            shutil.rmtree(lib)
        lib.mkdir(parents=True)
        for jar in jars:
            shutil.copy2(jar, lib / jar.name)
        (lib / "jars.txt").write_text("".join(f"{jar.name}\n" for jar in jars))


setup(cmdclass={"build_py": BuildPyWithJars})
