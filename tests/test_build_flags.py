"""setup.py's ISA choice: x86-64-v3 only where the machine, its CPU and the compiler all support it, else the
compiler's portable default (the install must work on aarch64, older x86 CPUs and other compilers)."""

import importlib.util
import platform
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


@pytest.fixture(scope="module")
def setup_module():
    spec = importlib.util.spec_from_file_location("dacer2_setup_under_test", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself runs only under __main__
    return module


def test_other_architectures_get_the_portable_default(setup_module, monkeypatch):
    monkeypatch.delenv("DACER2_PORTABLE_BUILD", raising=False)
    assert setup_module.isa_flags("aarch64") == []
    assert setup_module.isa_flags("ppc64le") == []


def test_portable_build_can_be_forced(setup_module, monkeypatch):
    monkeypatch.setenv("DACER2_PORTABLE_BUILD", "1")
    assert setup_module.isa_flags("x86_64") == []


def test_cpu_without_avx2_gets_the_portable_default(setup_module, tmp_path, monkeypatch):
    monkeypatch.delenv("DACER2_PORTABLE_BUILD", raising=False)
    old_cpu = tmp_path / "cpuinfo"
    old_cpu.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx\n")
    new_cpu = tmp_path / "cpuinfo_v3"
    new_cpu.write_text("processor\t: 0\nflags\t\t: sse2 avx avx2 fma f16c bmi1 bmi2 movbe\n")
    assert not setup_module.cpu_supports_x86_64_v3(old_cpu)
    assert setup_module.cpu_supports_x86_64_v3(new_cpu)
    monkeypatch.setattr(setup_module, "cpu_supports_x86_64_v3", lambda: False)
    assert setup_module.isa_flags("x86_64") == []


def test_compiler_that_rejects_the_flag_gets_the_portable_default(setup_module, monkeypatch):
    monkeypatch.delenv("DACER2_PORTABLE_BUILD", raising=False)
    assert not setup_module.compiler_accepts("-march=x86-64-v3", compiler="dacer2-no-such-compiler")
    assert not setup_module.compiler_accepts("--no-such-flag-for-any-compiler")
    monkeypatch.setattr(setup_module, "cpu_supports_x86_64_v3", lambda: True)
    monkeypatch.setattr(setup_module, "compiler_accepts", lambda flag: False)
    assert setup_module.isa_flags("x86_64") == []


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 build machines only")
def test_this_x86_machine_builds_with_x86_64_v3_when_it_can(setup_module, monkeypatch):
    monkeypatch.delenv("DACER2_PORTABLE_BUILD", raising=False)
    expected = ["-march=x86-64-v3"] if (setup_module.cpu_supports_x86_64_v3()
                                        and setup_module.compiler_accepts("-march=x86-64-v3")) else []
    assert setup_module.isa_flags() == expected
