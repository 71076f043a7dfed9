"""How the package is built and loaded: the torch `pip install .` builds against (tools/build_backend.py)
and the refusal to load an extension built against another torch (pointwise_cuda/_build.py).
CI runs both install commands for real (.ci/run); these check the decisions behind them."""

import importlib.metadata
import pathlib
import sys

import pytest
import torch

import pointwise_cuda
from pointwise_cuda import _build

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import build_backend  # noqa: E402


def test_extension_records_the_torch_it_was_built_against():
    assert _build._built_with.TORCH_VERSION == torch.__version__
    assert _build._built_with.TORCH_CUDA_VERSION == torch.version.cuda
    assert _build.mismatch(torch.__version__, torch.version.cuda, torch.__version__, torch.version.cuda) is None


@pytest.mark.parametrize("built,running", [
    (("2.13.0+cpu", None), ("2.14.1+cu130", "13.0")),
    (("2.14.1+cu128", "12.8"), ("2.14.1+cu130", "13.0")),
])
def test_a_mismatch_names_both_torches_and_the_rebuild_command(built, running):
    reason = _build.mismatch(*built, *running)
    assert built[0] in reason and running[0] in reason
    assert "pip install --no-build-isolation --force-reinstall" in reason


def test_import_refuses_an_extension_built_against_another_torch(monkeypatch):
    monkeypatch.setattr(_build._built_with, "TORCH_VERSION", "2.11.0+cpu")
    monkeypatch.setattr(_build._built_with, "TORCH_CUDA_VERSION", None)
    with pytest.raises(ImportError, match=r"built against torch 2\.11\.0\+cpu \(CPU only\).*" + torch.__version__.replace("+", r"\+")):
        _build.check()


def test_the_target_environments_torch_is_found_without_importing_it():
    assert build_backend.installed_torch_version() == importlib.metadata.version("torch")


def _isolated(monkeypatch, installed):
    """The backend as pip's isolated build runs it: no torch importable, `installed` in the target."""
    monkeypatch.setattr(build_backend.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(build_backend, "installed_torch_version", lambda: installed)


def test_an_isolated_build_asks_for_the_installed_release(monkeypatch):
    _isolated(monkeypatch, "2.14.1")
    assert build_backend.get_requires_for_build_wheel() == ["torch==2.14.1"]
    assert build_backend.get_requires_for_build_editable() == ["torch==2.14.1"]


def test_an_isolated_build_without_torch_asks_for_a_supported_one(monkeypatch):
    _isolated(monkeypatch, None)
    assert build_backend.get_requires_for_build_wheel() == ["torch>=2.11"]


def test_a_local_torch_build_stops_the_isolated_build_with_the_command_to_use(monkeypatch):
    _isolated(monkeypatch, "2.14.1+cu128")
    with pytest.raises(SystemExit, match=r"torch 2\.14\.1\+cu128.*pip install --no-build-isolation \."):
        build_backend.get_requires_for_build_wheel()


def test_a_build_that_sees_a_torch_adds_none():
    # --no-build-isolation: the build compiles against the torch it imports.
    assert build_backend.get_requires_for_build_wheel() == []
    assert pointwise_cuda.build_info()["torch_version"] == torch.__version__.split("+")[0]
