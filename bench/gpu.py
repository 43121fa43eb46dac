"""One command for a GPU machine: how fast kubetune's defaults train and generate.

    python bench/gpu.py [--out bench-results/gpu] [--steps 200]   # one H100-class GPU, ~6 min
    python bench/gpu.py --tiny                                     # CPU, the harness itself (CI runs it)

1. SFT of a Qwen2.5-0.5B-shaped model built from its config (random weights, no download) on
   generated chat data of mixed lengths: plain `trl sft` with TRL's defaults against the
   kubetune entrypoint with its defaults (`distributed.strategy: auto`, and on a GPU bf16, tf32,
   flash or SDPA attention, padding-free packing, Liger when installed). Same model, data,
   batch, steps and seed. Tokens/s count real tokens only (non-padding), so packing is not
   credited for tokens it never computed.
2. The entrypoint with ZeRO-2 and with ZeRO-3 on the same GPU (DeepSpeed's cost on one device).
3. Generation of the same prompts, greedy, by the evaluator's vLLM engine and its transformers
   engine: output tokens/s.

Prints a markdown table and writes results.json and results.md under --out. MFU is the model's
training FLOPs per second (contract.plan: 6 per weight plus attention, at max_length) over the
GPU's dense bf16 peak from the plan's GPU table; on a CPU it is left out.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

WORDS = ("the model reads a question and writes an answer about data training tokens batch gradient memory "
         "cluster node GPU kernel attention packing schedule loss step epoch checkpoint evaluation").split()


# --- inputs ----------------------------------------------------------------------------


def model_config(tiny: bool) -> dict[str, Any]:
    from kubetune.contract.builtin import TINY_MODEL, TINY_VOCAB
    from model_shapes import QWEN25_05B

    return {**TINY_MODEL, "vocab_size": TINY_VOCAB} if tiny else QWEN25_05B


def build_model(config: dict[str, Any], folder: Path) -> Path:
    """Random weights from the config, with the built-in tokenizer (its ids fit any vocabulary)."""
    import torch
    import transformers

    from trainer_entrypoint.builtin import tiny_model_dir

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config),
                                                          dtype=torch.bfloat16)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir())
    model.config.pad_token_id, model.config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def generate_data(folder: Path, rows: int, longest_words: int) -> Path:
    """Chat rows whose lengths spread from a few words to about max_length: padding matters."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as out:
        for _ in range(rows):
            length = int(longest_words * rng.random() ** 2) + 4
            out.write(json.dumps({"messages": [{"role": "user", "content": sentence(rng, 8)},
                                               {"role": "assistant", "content": sentence(rng, length)}]}) + "\n")
    return folder


# --- measuring -------------------------------------------------------------------------


class PeakMemory:
    """Polls GPU memory in use (nvidia-smi), or the resident memory of this process's children."""

    def __init__(self, gpu: bool):
        self.gpu, self.peak, self._stop = gpu, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> int:
        if self.gpu:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout
            return int(out.split()[0]) * 1024**2 if out.strip() else 0
        import psutil

        total = 0
        for child in psutil.Process().children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _poll(self):
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._sample())


def final_metrics(log: str) -> dict[str, float]:
    """The Trainer's closing metrics line ({'train_runtime': ..., 'num_input_tokens_seen': ...})."""
    found = re.findall(r"\{[^{}]*'train_runtime'[^{}]*\}", log)
    if not found:
        raise SystemExit(f"no training metrics in the log:\n{log[-3000:]}")
    return {key: float(value) for key, value in ast.literal_eval(found[-1]).items()}


def run_training(command: list[str], env: dict[str, str], gpu: bool, log_file: Path) -> dict[str, Any]:
    started = time.monotonic()
    with PeakMemory(gpu) as memory, open(log_file, "w") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    text = log_file.read_text()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed ({log_file}):\n{text[-3000:]}")
    metrics = final_metrics(text)
    return {"tokens_per_second": metrics["num_input_tokens_seen"] / metrics["train_runtime"],
            "train_runtime_s": metrics["train_runtime"], "wall_s": time.monotonic() - started,
            "peak_memory_bytes": memory.peak, "tokens": metrics["num_input_tokens_seen"],
            "defaults": re.findall(r"kubetune: (default .*|distributed: .*)", text)}


def training_keys(args) -> dict[str, Any]:
    keys = {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "logging_steps": 10, "seed": 0,
            "include_num_input_tokens_seen": "non_padding", "learning_rate": 2e-5}
    return {**keys, "max_length": args.max_length} if args.max_length else keys


# TRL's own `trl sft` script; only the token count is made non-padding (its command line takes
# include_num_input_tokens_seen as a yes/no flag).
TRL_SFT = ("import sys; from trl.scripts.sft import make_parser, main; "
           "args = make_parser().parse_args_and_config(sys.argv[1:]); "
           "args[1].include_num_input_tokens_seen = 'non_padding'; main(*args[:4])")


def trl_sft(args, model: Path, data: Path, scratch: Path, env: dict[str, str], gpu: bool) -> dict[str, Any]:
    keys = {key: value for key, value in training_keys(args).items() if key != "include_num_input_tokens_seen"}
    flags = {**keys, "report_to": "none", "save_strategy": "no", "output_dir": scratch / "trl"}
    if not gpu:
        flags.update(use_cpu=True, bf16=False, dataloader_pin_memory=False)
    command = [sys.executable, "-c", TRL_SFT, "--model_name_or_path", str(model), "--dataset_name", str(data)]
    for key, value in flags.items():
        command += [f"--{key}", str(value)]
    return run_training(command, env, gpu, scratch / "trl-sft.log")


def entrypoint(args, model: Path, data: Path, scratch: Path, env: dict[str, str], gpu: bool,
               strategy: str) -> dict[str, Any]:
    """The worker pod's own command (torchrun and the entrypoint), as `kubetune run` starts it."""
    from conftest import with_spec
    from local_pods import pod_env, write_local_config

    from kubetune import contract
    from kubetune.local.pods import command_of

    document = with_spec(method="sft", model={"source": str(model)}, dataset={"source": str(data)},
                         training=training_keys(args), distributed={"strategy": strategy},
                         checkpointing={"everySteps": args.steps * 10},
                         resources={"gpusPerNode": 1 if gpu else 0}, evaluation={"enabled": False})
    root = Path(tempfile.mkdtemp(prefix=f"kubetune-{strategy}-", dir=scratch))
    objects, _ = write_local_config(document, root)
    container = objects.stateful_set["spec"]["template"]["spec"]["containers"][0]
    pod = {**env, **pod_env(objects, 0, root, {"KUBETUNE_METRICS_PORT": "0"})}
    pod[contract.ENV_TERMINATION_LOG] = str(root / "termination-log")
    if "TORCH_EXTENSIONS_DIR" in env:  # compiled DeepSpeed ops, shared as a node's cache would be
        pod["TORCH_EXTENSIONS_DIR"] = env["TORCH_EXTENSIONS_DIR"]
    return run_training(command_of(container), pod, gpu, scratch / f"kubetune-{strategy}.log")


def generation(engine: str, model: Path, prompts: int, tokens: int) -> dict[str, Any]:
    """Runs in a process of its own (see main): one engine, the same prompts, greedy."""
    import transformers

    from kubetune.contract.config import SamplingConfig
    from trainer_entrypoint.evaluate.engines import Sampling, Weights, open_engine

    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    rng = random.Random(1)
    batch = [tokenizer(sentence(rng, 24))["input_ids"] for _ in range(prompts)]
    started = time.monotonic()
    llm = open_engine(engine, Weights(model=str(model)), tokenizer)
    loaded = time.monotonic()
    sampling = Sampling(**SamplingConfig(max_tokens=tokens).model_dump(), stop=[])  # the evaluation's defaults
    outputs = llm.generate(batch, sampling, adapter=False)
    seconds = time.monotonic() - loaded
    llm.close()
    produced = sum(len(completions[0]) for completions in outputs)
    return {"output_tokens": produced, "generate_s": seconds, "load_s": loaded - started,
            "tokens_per_second": produced / seconds}


def generation_in_process(engine: str, model: Path, args, env: dict[str, str], scratch: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--generate", engine, "--model", str(model), "--prompts", str(args.prompts),
               "--new-tokens", str(args.new_tokens)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    (scratch / f"generate-{engine}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{engine} generation failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------


def with_mfu(result: dict[str, Any], flops_per_token: float, peak: Optional[float]) -> dict[str, Any]:
    from kubetune.contract.plan import mfu

    return {**result, "mfu": mfu(result["tokens_per_second"], flops_per_token, peak) if peak else None}


def markdown(results: dict[str, Any]) -> str:
    def row(name, r, ratio=""):
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "-"
        return (f"| {name} | {r['tokens_per_second']:,.0f} | {mfu} | {r['peak_memory_bytes'] / 1024**3:.2f} | "
                f"{r['train_runtime_s']:.1f} | {ratio} |")

    sft, zero, gen = results["sft"], results["zero"], results["generation"]
    zero3 = zero["zero3"]["tokens_per_second"] / zero["zero2"]["tokens_per_second"]
    lines = [f"Device: {results['device']}; model: {results['model']}; {results['settings']}", "",
             "| training run | tokens/s | MFU | peak memory GiB | train s | ratio |", "|---|---|---|---|---|---|",
             row("plain `trl sft`, TRL defaults", sft["trl sft"]),
             row("kubetune entrypoint, its defaults", sft["kubetune"], f"{results['ratio']:.2f}x"),
             row("kubetune, ZeRO-2", zero["zero2"]),
             row("kubetune, ZeRO-3", zero["zero3"], f"{zero3:.2f}x of ZeRO-2"),
             "", "| generation | output tokens/s | load s | generate s |", "|---|---|---|---|"]
    for engine, r in gen.items():
        lines.append(f"| {engine} | {r['tokens_per_second']:,.0f} | {r['load_s']:.1f} | {r['generate_s']:.1f} |")
    lines += ["", "kubetune defaults applied:"] + [f"- {line}" for line in sft["kubetune"]["defaults"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="The tiny model on the CPU: tests the harness.")
    parser.add_argument("--out", default="bench-results/gpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None, help="Default: TRL's (1024); --tiny: 128.")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--generate", choices=["vllm", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generation(args.generate, Path(args.model), args.prompts, args.new_tokens)))
        return
    import torch

    gpu = torch.cuda.is_available() and not args.tiny
    if not gpu and not args.tiny:
        raise SystemExit("no CUDA device: run with --tiny to test the harness on the CPU")
    args.steps = args.steps or (20 if args.tiny else 200)
    args.max_length = args.max_length or (128 if args.tiny else None)
    args.prompts = args.prompts or (8 if args.tiny else 128)
    args.new_tokens = args.new_tokens or (16 if args.tiny else 256)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="kubetune-gpu-bench-", dir=os.environ.get("TMPDIR")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    config = model_config(args.tiny)
    model = build_model(config, scratch / "model")
    data = generate_data(scratch / "data", 256 if args.tiny else 4000, 100 if args.tiny else 700)

    from kubetune.contract.gpus import gpu_named
    from kubetune.contract.plan import ModelShape

    device = torch.cuda.get_device_name(0) if gpu else "CPU"
    row = gpu_named(device) if gpu else None
    peak = row.peak_flops if row else None
    flops = ModelShape.from_config(config).flops_per_token(args.max_length or 1024)
    runs = {"trl sft": trl_sft(args, model, data, scratch, env, gpu),
            "kubetune": entrypoint(args, model, data, scratch, env, gpu, "auto")}
    zero = {stage: entrypoint(args, model, data, scratch, env, gpu, stage) for stage in ("zero2", "zero3")}
    results = {
        "device": device, "model": "builtin tiny shape" if args.tiny else "Qwen2.5-0.5B shape (random weights)",
        "settings": f"{args.steps} steps, per-device batch {args.batch}, max_length {args.max_length or 1024}, "
                    f"seed 0; generation: {args.prompts} prompts x {args.new_tokens} new tokens, greedy",
        "flops_per_token": flops, "peak_flops": peak,
        "sft": {name: with_mfu(r, flops, peak) for name, r in runs.items()},
        "zero": {name: with_mfu(r, flops, peak) for name, r in zero.items()},
        "generation": {engine: generation_in_process(engine, model, args, env, scratch)
                       for engine in ("vllm", "transformers")},
    }
    results["ratio"] = runs["kubetune"]["tokens_per_second"] / runs["trl sft"]["tokens_per_second"]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
