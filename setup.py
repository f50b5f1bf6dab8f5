"""Build hook for dacer2's compiled parts.

Metadata lives in pyproject.toml. This file exists so `csrc/` (C++ CPU kernels, and CUDA kernels
behind an opt-in switch) can be built by `pip install -e .`. It is kept importable without a
compiler so that a plain install never breaks: when `csrc/` holds no sources, nothing is built.
"""

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
            # A portable ISA: the .so may be cached and reused on another CPU, so never -march=native.
            extra_compile_args=["-O3", "-march=x86-64-v3", "-ffast-math"],
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
