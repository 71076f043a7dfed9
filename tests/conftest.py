"""Shared pytest setup: the --runslow option, the cuda/slow markers, per-test seeds, TF32 pinning,
the CPU kernel paths, and the CUDA emulator's fixtures.

CUDA tests run automatically where torch.cuda.is_available(); elsewhere they are skipped with a
reason (tests marked `cuda`) or not generated at all (the `device` parametrisations list "cuda"
only when a GPU is present, see reference.DEVICES).
"""

import os
import zlib

import pytest
import torch

import emulator
import pointwise_cuda as pw
from emulator import H100


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: large tensors or long runs; skipped unless --runslow is given")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")
    config.addinivalue_line("markers", "every_cpu_isa: run the module's CPU tests once per CPU kernel set (cpu_path)")


def pytest_generate_tests(metafunc):
    # The numeric sweeps (modules marked every_cpu_isa) run once per ISA's CPU kernel set: every path
    # this machine has is checked on it, the others skip naming their cpuinfo flags.
    if metafunc.definition.get_closest_marker("every_cpu_isa") and "device" in metafunc.fixturenames:
        metafunc.fixturenames.append("cpu_path")
        metafunc.parametrize("cpu_path", [isa["name"] for isa in pw._C.cpu_isas()], indirect=True)


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow test: pass --runslow to run it")
    skip_cuda = pytest.mark.skip(reason="no CUDA device (torch.cuda.is_available() is False)")
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


def _set_tf32(enabled: bool):
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


@pytest.fixture(autouse=True)
def pin_tf32():
    """Every test starts with TF32 off (exact fp32 in F.conv2d, torch.matmul and our op), and the
    flags are restored afterwards whatever the test did to them."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    _set_tf32(False)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def tf32_on(pin_tf32):
    """TF32 allowed for the duration of the test (restored by pin_tf32)."""
    _set_tf32(True)
    yield


@pytest.fixture(autouse=True)
def seed(request):
    """A fixed seed per test (derived from its id): fresh random data in every test, reproducible."""
    value = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(value)
    return value


@pytest.fixture
def restore_num_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.fixture(params=[isa["name"] for isa in pw._C.cpu_isas()])
def cpu_path(request):
    """Runs the test once with each ISA's CPU kernel set, where this build has it and this CPU runs it
    (skipped otherwise, naming the cpuinfo flags missing)."""
    isa = next(i for i in pw._C.cpu_isas() if i["name"] == request.param)
    params = getattr(request.node, "callspec", None)
    if params is not None and params.params.get("device", "cpu") != "cpu":
        if isa["name"] != pw.build_info()["cpu_isa"]:
            pytest.skip("a CUDA test: the CPU kernel set does not matter, it runs once")
        yield isa["name"]
        return
    if not isa["compiled"]:
        pytest.skip(f"this build has no {isa['name']} kernels")
    if not isa["supported"]:
        pytest.skip(f"this CPU lacks {isa['flags']} (cpuinfo flags) for the {isa['name']} kernels")
    before = pw._C.cpu_isa()
    pw._C.set_cpu_isa(isa["name"])
    yield isa["name"]
    pw._C.set_cpu_isa(before)


# ---- the CUDA emulator (tests/emulator): test_cuda_emulated.py, test_cuda_counters.py ----

@pytest.fixture(scope="module")
def emu():
    try:
        module = emulator.load()
    except emulator.ToolkitNotFound as e:
        if os.environ.get("POINTWISE_REQUIRE_EMULATOR") == "1":
            raise
        pytest.skip(str(e))
    # Guard pages around every CPU tensor and NaN in new memory: a kernel access outside a tensor
    # faults (the test process dies, the faulting test named in its traceback), and an output
    # element never written fails the finiteness check.
    module.guard_cpu_allocations(True)
    yield module
    module.guard_cpu_allocations(False)
    module.set_device(H100)
    module.set_copy_landing("late")


@pytest.fixture
def on_device(emu):
    """Emulates the GPU of the given index for one test."""

    def select(index):
        emu.set_device(index)

    yield select
    emu.set_device(H100)


@pytest.fixture
def autotuning(emu):
    """Autotuning on, from an empty cache, for one test."""
    emu.clear_autotune_cache()
    emu.set_autotune(True)
    yield
    emu.set_autotune(False)
    emu.prefer_plan(None)
    emu.clear_autotune_cache()
