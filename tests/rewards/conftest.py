"""Fixtures of the reward tests."""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture
def own_sandbox_runs(tmp_path, monkeypatch):
    """Asserts that no process and no folder of this test's own sandbox runs outlives them.

    The test's runs put their folders under a folder of its own (tempfile's directory points there)
    and are told from other callers' runs by the marker every run carries (it starts with our pid),
    so another test session using the sandbox on the same machine at the same time cannot make
    this fail, nor be blamed for what that session leaves.
    """
    from pangu_core.rewards.sandbox import sandboxed_processes

    runs = tmp_path / "sandbox-runs"
    runs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs))
    yield runs
    assert sandboxed_processes() == []
    assert sorted(p.name for p in runs.iterdir()) == []
