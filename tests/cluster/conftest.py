"""A local Ray instance for the cluster tests (``ray.init(num_cpus=2)``), started once per test session."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[Any]:
    """Two CPUs, as on the CI machine; workers can import ``tests`` (the fault-injecting encoders live there).

    Shut down when the cluster tests end, so that Ray's threads do not run on beside the rest of the suite.
    """
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "PINID_OFFLINE": "1"}})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest generated benchmark: catalogue, photos and listings (about 5 s)."""
    from pinid.synth import generate

    out = tmp_path_factory.mktemp("ray-bench") / "bench"
    generate(out, "tiny", seed=0, workers=1)
    return out
