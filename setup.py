"""Build hook for dacer2's compiled parts.

Metadata lives in pyproject.toml. This file exists so `csrc/` (the C++ CPU kernels; the CUDA kernels are
Triton, compiled at run time) can be built by `pip install -e .`. It is kept importable without a
compiler so that a plain install never breaks: when `csrc/` holds no sources, nothing is built.
"""

import platform
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
CPP_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))

ext_modules = []
cmdclass = {}
if CPP_SOURCES:
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext_modules.append(
        CppExtension(
            "dacer2._C",
            CPP_SOURCES,
            # A portable ISA: the .so may be cached and reused on another CPU, so never -march=native. x86-64-v3
            # (AVX2, FMA) only on x86-64; elsewhere (aarch64) the compiler's default target.
            extra_compile_args=["-O3", "-ffast-math"]
            + (["-march=x86-64-v3"] if platform.machine().lower() in ("x86_64", "amd64") else []),
        )
    )
    cmdclass["build_ext"] = BuildExtension

setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # kernels/ is shipped inside the package as dacer2.kernels, never as a top-level `kernels`.
    package_dir={"dacer2.kernels": "kernels"},
    packages=find_packages(include=["dacer2", "dacer2.*"]) + ["dacer2.kernels"],
)
