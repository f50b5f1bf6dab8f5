"""Build hook for dacer2's compiled parts.

Metadata lives in pyproject.toml. This file exists so `csrc/` (the C++ CPU kernels; the CUDA kernels are
Triton, compiled at run time) can be built by `pip install -e .`. When `csrc/` holds no sources, nothing is
built. The ISA flags fall back to the compiler's default where x86-64-v3 is unavailable (other architectures, older
CPUs, compilers without the flag), or when DACER2_PORTABLE_BUILD=1 asks for a portable build.
"""

import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
CPP_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
# AVX2 + FMA + F16C + BMI: a portable ISA level, never -march=native, because a built wheel or a cached .so may be
# reused on another CPU of the same family.
X86_64_V3 = "-march=x86-64-v3"
X86_64_V3_CPU_FLAGS = ("avx2", "fma", "f16c", "bmi1", "bmi2", "movbe")


def cpu_supports_x86_64_v3(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the building machine can run x86-64-v3 code (True where /proc/cpuinfo is unreadable: a
    compiler that accepts the flag on such a system is trusted)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return True
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return match is None or set(X86_64_V3_CPU_FLAGS) <= set(match.group(1).split())


def compiler_accepts(flag: str, compiler: str | None = None) -> bool:
    """Whether the C++ compiler builds an empty translation unit with `flag`."""
    compiler = compiler or os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.cpp"
        source.write_text("int main() { return 0; }\n")
        result = subprocess.run([compiler, flag, "-c", str(source), "-o", str(Path(tmp) / "probe.o")],
                                capture_output=True)
    return result.returncode == 0


def isa_flags(machine: str | None = None) -> list[str]:
    """-march=x86-64-v3 where the machine is x86-64, its CPU runs that level and the compiler accepts it;
    otherwise the compiler's portable default. DACER2_PORTABLE_BUILD=1 forces the fallback."""
    machine = (machine or platform.machine()).lower()
    if os.environ.get("DACER2_PORTABLE_BUILD", "") not in ("", "0"):
        return []
    if machine not in ("x86_64", "amd64") or not cpu_supports_x86_64_v3():
        return []
    return [X86_64_V3] if compiler_accepts(X86_64_V3) else []


def build_ext_modules() -> tuple[list, dict]:
    if not CPP_SOURCES:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    flags = isa_flags()
    print(f"dacer2: building dacer2._C with {' '.join(flags) or 'the portable default ISA'}")
    extension = CppExtension("dacer2._C", CPP_SOURCES, extra_compile_args=["-O3", "-ffast-math", *flags])
    return [extension], {"build_ext": BuildExtension}


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it for isa_flags alone
    ext_modules, cmdclass = build_ext_modules()
    setup(
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        # kernels/ is shipped inside the package as dacer2.kernels, never as a top-level `kernels`.
        package_dir={"dacer2.kernels": "kernels"},
        packages=find_packages(include=["dacer2", "dacer2.*"]) + ["dacer2.kernels"],
    )
