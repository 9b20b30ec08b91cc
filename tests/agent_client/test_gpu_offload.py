"""--n-gpu-layers reaches the loaded model: the agent's bench reports the layers llama.cpp put on
a non-CPU device. The GPU case needs a llama-cpp-python built with a GPU backend (CUDA, Metal,
Vulkan) and is skipped with that reason elsewhere; the CPU case checks the same report offloads
nothing on a CPU-only build."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = [pytest.mark.llama]

GPU = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())


def _bench(stories_gguf, tmp_path, n_gpu_layers: int) -> dict:
    from ramp_edge.agent_client import Agent, BenchOptions
    from ramp_edge.fleet.local import LocalConnection

    options = BenchOptions(threads=1, n_prompt=8, n_gen=4, reps=1, n_gpu_layers=n_gpu_layers)
    with LocalConnection(tmp_path / "device") as conn:
        agent = Agent(conn)
        agent.install()
        return agent.bench(str(stories_gguf), options)


@pytest.mark.skipif(
    not GPU,
    reason="llama-cpp-python here is a CPU-only build (llama_supports_gpu_offload() is false); "
    "needs a CUDA/Metal/Vulkan build and a GPU",
)
def test_n_gpu_layers_reaches_the_gpu(stories_gguf, tmp_path):
    data = _bench(stories_gguf, tmp_path, -1)
    assert data["gpu_offload"] is True and data["n_gpu_layers"] == -1
    offloaded, total = data["layers_offloaded"]
    assert total > 0 and offloaded == total, data["layers_offloaded"]
    one = _bench(stories_gguf, tmp_path, 1)
    assert one["layers_offloaded"][0] == 1
    assert data["tests"]["tg4"]["avg_ts"] > 0


@pytest.mark.skipif(GPU, reason="a GPU build: the CPU-only report is checked on CPU builds")
def test_a_cpu_build_reports_no_offloaded_layers(stories_gguf, tmp_path):
    data = _bench(stories_gguf, tmp_path, -1)
    assert data["gpu_offload"] is False and data["n_gpu_layers"] == -1
    offloaded, total = data["layers_offloaded"]
    assert offloaded == 0 and total == 6  # stories260K: 6 blocks, all on the CPU
    # and it is kept with the stored result
    from ramp_edge.results import BenchResult

    common = {"host": "h", "device": None, "artifact": "a", "artifact_sha256": "0" * 64}
    result = BenchResult.from_agent(data, artifact_bytes=1, **common)
    assert BenchResult.from_dict(result.to_dict()).layers_offloaded == (0, 6)
