#!/usr/bin/env python3
"""Build agiqa-score-cpp against the ExecuTorch C++ SDK inside the executorch wheel.

    python edge_runtime/cpp/build.py                       # host (x86-64 or aarch64)
    python edge_runtime/cpp/build.py --target aarch64      # cross build, Debian g++-aarch64-linux-gnu
    python edge_runtime/cpp/build.py --build-dir build/cpp # where it goes (default: build/cpp-<target>)

Prints the path of the binary. The host build uses the SDK of the installed ``executorch``
package. The aarch64 build downloads the same executorch version's manylinux aarch64 wheel
with pip (``pip download --platform manylinux_2_28_aarch64``) into ``<build-dir>/sdk`` once and
unpacks only its C++ SDK (include/, lib/, share/). The build folder is reused: a second call
rebuilds only what changed. Run the aarch64 binary with
``qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a76 BINARY ...``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("host", "aarch64")
AARCH64_PLATFORM = "manylinux_2_28_aarch64"


class BuildError(RuntimeError):
    """The build failed; the message says why."""


class ToolMissing(BuildError):
    """A compiler, CMake or the SDK is not installed; the message says how to install it."""


def installed_sdk() -> Path:
    """The executorch package folder of this interpreter (holds include/, lib/, share/)."""
    try:
        import executorch  # a namespace package: no __file__, one __path__ entry
    except ImportError:
        raise ToolMissing("executorch is not installed in this Python; pip install the pinned "
                          "toolchain (pip install -e .)") from None
    root = Path(list(executorch.__path__)[0])
    if not (root / "share" / "cmake" / "executorch-config.cmake").is_file():
        raise ToolMissing(f"{root}: this executorch wheel ships no C++ SDK (share/cmake missing)")
    return root


def aarch64_sdk(cache: Path) -> Path:
    """The aarch64 wheel's C++ SDK, downloaded and unpacked under ``cache`` once."""
    root = cache / "executorch"
    if (root / "share" / "cmake" / "executorch-config.cmake").is_file():
        return root
    version = importlib.metadata.version("executorch")
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"executorch-{version}-*{AARCH64_PLATFORM}*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--platform", AARCH64_PLATFORM,
                        f"executorch=={version}", "-d", str(wheels)], check=True)
        found = sorted(wheels.glob(f"executorch-{version}-*{AARCH64_PLATFORM}*.whl"))
    if not found:
        raise BuildError(f"pip found no {AARCH64_PLATFORM} wheel of executorch {version}")
    staging = cache / "executorch.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(found[-1]) as wheel:
        for name in wheel.namelist():
            parts = name.split("/")
            if len(parts) > 2 and parts[0] == "executorch" and parts[1] in ("include", "lib", "share"):
                wheel.extract(name, staging)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging / "executorch", root)
    staging.rmdir()
    return root


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise ToolMissing(f"{tool} not found; install it (Debian: apt-get install {package})")


def build(target: str = "host", build_dir: str | os.PathLike | None = None,
          jobs: int | None = None) -> Path:
    """Configure and build; returns the agiqa-score-cpp binary. Raises :class:`BuildError`."""
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r}; choose from {list(TARGETS)}")
    build_dir = Path(build_dir or Path.cwd() / "build" / f"cpp-{target}").resolve()
    _require("cmake", "cmake")
    args = ["-DCMAKE_BUILD_TYPE=Release"]
    if target == "aarch64" and platform.machine() not in ("aarch64", "arm64"):
        _require("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")
        sdk = aarch64_sdk(build_dir / "sdk")
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={HERE / 'cmake' / 'aarch64-linux-gnu.cmake'}")
    else:
        _require("c++", "g++")
        sdk = installed_sdk()
    if not Path("/usr/include/nlohmann/json.hpp").is_file() and not os.environ.get("CPATH"):
        raise ToolMissing("nlohmann/json.hpp not found; install it (Debian: apt-get install "
                          "nlohmann-json3-dev)")
    args.append(f"-DCMAKE_PREFIX_PATH={sdk}")
    cmake_dir = build_dir / "cmake"
    configure = ["cmake", "-S", str(HERE), "-B", str(cmake_dir), *args]
    compile_ = ["cmake", "--build", str(cmake_dir), "-j", str(jobs or os.cpu_count() or 2)]
    for command in (configure, compile_):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise BuildError(f"{' '.join(command[:2])} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return cmake_dir / "agiqa-score-cpp"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=TARGETS, default="host")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="build folder (default: build/cpp-<target> in the current folder)")
    parser.add_argument("--jobs", "-j", type=int, default=None)
    options = parser.parse_args()
    try:
        print(build(options.target, options.build_dir, options.jobs))
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
