"""Training throughput of the kubetune trainer entrypoint vs plain `trl sft`, same settings.

Both train builtin://tiny with SFT in one process on the CPU, from a cold process start.
Prints train tokens/s (input tokens seen / train_runtime, as the Trainer reports them) as the
median and range over interleaved repeats (CPU timings on a shared machine drift), wall time,
and the ratio of the medians, entrypoint / trl.

    python bench/trainer_vs_trl.py [--steps 300] [--batch 8] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def final_metrics(log: str) -> dict:
    """The Trainer's closing metrics line ({'train_runtime': ..., 'num_input_tokens_seen': ...})."""
    lines = [line for line in re.findall(r"\{[^{}]*'train_runtime'[^{}]*\}", log)]
    metrics = ast.literal_eval(lines[-1])
    return {key: float(value) for key, value in metrics.items()}


def run(command, env) -> tuple[dict, float, str]:
    started = time.monotonic()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    log = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{log[-3000:]}")
    return final_metrics(log), wall, log


def bench_entrypoint(args, scratch: Path, env) -> tuple[dict, float]:
    from conftest import with_spec
    from local_pods import pod_env, write_local_config

    document = with_spec(method="sft", training=training_keys(args), checkpointing={"everySteps": args.steps})
    root = Path(tempfile.mkdtemp(dir=scratch))
    objects, _ = write_local_config(document, root)
    pod = {**env, **pod_env(objects, 0, root, {"KUBETUNE_METRICS_PORT": "0"})}
    pod["TORCH_EXTENSIONS_DIR"] = env.get("TORCH_EXTENSIONS_DIR", str(scratch / "ext"))
    metrics, wall, _ = run([sys.executable, "-m", "trainer_entrypoint", "train"], pod)
    return metrics, wall


def bench_trl(args, scratch: Path, env, tiny: Path) -> tuple[dict, float]:
    trl = Path(sys.executable).parent / "trl"
    flags = []
    for key, value in {**training_keys(args), "use_cpu": True, "bf16": False, "report_to": "none",
                       "include_num_input_tokens_seen": True, "save_strategy": "steps",
                       "save_steps": args.steps, "dataloader_pin_memory": False}.items():
        flags += [f"--{key}", str(value)]
    output = tempfile.mkdtemp(dir=scratch)
    command = [str(trl), "sft", "--model_name_or_path", str(tiny / "model"),
               "--dataset_name", str(tiny / "data" / "messages"), "--output_dir", output, *flags]
    metrics, wall, _ = run(command, env)
    return metrics, wall


def training_keys(args) -> dict:
    return {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "max_length": 64,
            "learning_rate": 1e-3, "logging_steps": 50, "seed": 0}


def tokens_per_second(metrics: dict) -> float:
    return metrics["num_input_tokens_seen"] / metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "KUBETUNE_BUILTIN_DIR": os.environ.get("KUBETUNE_BUILTIN_DIR", str(scratch / "builtin")),
           "HF_HUB_OFFLINE": "1", "TMPDIR": str(scratch)}
    os.environ.update(env)
    from trainer_entrypoint.builtin import tiny_dir

    tiny = tiny_dir()
    results = {"entrypoint": [], "trl sft": []}
    for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
        results["entrypoint"].append(bench_entrypoint(args, scratch, env))
        results["trl sft"].append(bench_trl(args, scratch, env, tiny))
    print(f"SFT, builtin://tiny, {args.steps} steps, batch {args.batch}, max_length 64, 1 CPU process, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, {args.repeat} interleaved runs each")
    print(f"{'runner':<12} {'tokens/s median':>16} {'min':>7} {'max':>7} {'wall s median':>14}")
    medians = {}
    for name, runs in results.items():
        rates = sorted(tokens_per_second(metrics) for metrics, _ in runs)
        medians[name] = statistics.median(rates)
        wall = statistics.median(wall for _, wall in runs)
        print(f"{name:<12} {medians[name]:>16.0f} {rates[0]:>7.0f} {rates[-1]:>7.0f} {wall:>14.1f}")
    ratio = medians["entrypoint"] / medians["trl sft"]
    print(f"ratio entrypoint / trl sft (medians): {ratio:.3f}")
    print(json.dumps({"tokens_per_second_median": medians, "ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
