"""bench/gpu.py --tiny: the GPU benchmark's harness, run on the CPU (its figures are not judged)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.timeout(900)
def test_the_gpu_benchmark_runs_every_part_on_the_cpu_and_writes_json_and_markdown(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    runs = {**results["sft"], **results["zero"]}
    assert set(runs) == {"trl sft", "kubetune", "zero2", "zero3"}
    for name, run in runs.items():
        assert run["tokens_per_second"] > 0 and run["tokens"] > 0 and run["peak_memory_bytes"] > 0, name
        assert run["mfu"] is None, name  # no GPU peak on a CPU
    ratio = runs["kubetune"]["tokens_per_second"] / runs["trl sft"]["tokens_per_second"]
    assert results["ratio"] == pytest.approx(ratio)
    # On a CPU the entrypoint adds no GPU default; auto is ddp.
    assert runs["kubetune"]["defaults"] == [
        "distributed: ddp, offload none: no GPUs: data parallel across CPU processes"]
    assert runs["zero3"]["defaults"][-1].startswith("distributed: zero3")
    for engine in ("vllm", "transformers"):
        assert results["generation"][engine]["output_tokens"] > 0

    # GRPO (--tiny: 2 steps, batch 2, 2 generations of at most 8 tokens): generate() and colocate
    # train through the entrypoint; the server answers TRL's client (its weight sync needs CUDA).
    grpo = results["grpo"]["runs"]
    assert set(grpo) == {"generate", "colocate", "server"}
    for mode in ("generate", "colocate"):
        run = grpo[mode]
        assert run["steps"] == 2 and run["completions"] == 4, mode
        assert run["completions_per_second"] > 0 and run["seconds_per_step"] > 0, mode
        assert run["completions_per_generation_second"] > 0 and run["generation_tokens_per_second"] > 0, mode
        assert 0 < run["completion_tokens"] <= 4 * 8, mode
    assert grpo["generate"]["generation_notes"] == []
    assert any("reload_weights" in note for note in grpo["colocate"]["generation_notes"])  # the CPU shim synced
    server = grpo["server"]
    assert server["client_only"] and server["completions"] == 4 and 0 < server["completion_tokens"] <= 4 * 8
    assert server["completions_per_generation_second"] > 0 and server["server_ready_s"] > 0

    table = (tmp_path / "results.md").read_text()
    assert "| plain `trl sft`, TRL defaults |" in table and "| vllm |" in table
    assert "| `generate()` (use_vllm false) |" in table and "| vLLM colocate |" in table
    assert "| vLLM server, generation only" in table
