"""One command for a GPU machine: how fast kubetune's defaults train and generate.

    python bench/gpu.py [--out bench-results/gpu] [--steps 200]   # one H100-class GPU (two for GRPO server mode)
    python bench/gpu.py --tiny                                     # CPU, the harness itself (CI runs it)
    python bench/gpu.py --only grpo                                # one part: sft, zero, generation, grpo

1. SFT of a Qwen2.5-0.5B-shaped model built from its config (random weights, no download) on
   generated chat data of mixed lengths: plain `trl sft` with TRL's defaults against the
   kubetune entrypoint with its defaults (`distributed.strategy: auto`, and on a GPU bf16, tf32,
   flash or SDPA attention, padding-free packing, Liger when installed). Same model, data,
   batch, steps and seed. Tokens/s count real tokens only (non-padding), so packing is not
   credited for tokens it never computed.
2. The entrypoint with ZeRO-2 and with ZeRO-3 on the same GPU (DeepSpeed's cost on one device).
3. Generation of the same prompts, greedy, by the evaluator's vLLM engine and its transformers
   engine: output tokens/s.
4. GRPO with kubetune's `answer_match` reward on generated prompt-only rows (a prompt and an
   `answer` column), the same settings for each run (default 10 steps, per-device batch 8,
   num_generations 8, max_completion_length 256; --tiny: 2, 2, 2, 8), each run the worker pod's
   own command (`python -m trainer_entrypoint train`, so kubetune's defaults and its CPU colocate
   shim apply) with the job rendered and its config written as `kubetune run` does:
   - generate(): use_vllm false (TRL generates with transformers' generate());
   - colocate: use_vllm true, vllm_mode colocate, vllm_gpu_memory_utilization 0.3;
   - server: spec.generation, rendered into the generation server's pod (`python -m
     trainer_entrypoint generation-server` on GPU 1) and TRL keys pointing GRPO on GPU 0 at it
     (vllm_mode server; TRL pushes weights over NCCL). With one GPU it is skipped and the results
     say so. With --tiny (CPU) the real server pod starts and generation alone is measured through
     TRL's VLLMClient, with the requests GRPO would make: TRL's weight sync to a server needs CUDA.
   Per run: completions/s over the Trainer's train_runtime (vLLM's engine start, in the trainer's
   constructor, is outside it) and over the time in TRL's generation step (kubetune's
   GenerationMeter: weight syncs left out), generation tokens/s (the same time), seconds per step
   (train_runtime / steps, and TRL's step_time after the first step, which pays warm-ups).
   completions = steps x per_device_train_batch_size (one process, no gradient accumulation).

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


def run_logged(command: list[str], env: dict[str, str], gpu: bool, log_file: Path) -> dict[str, Any]:
    """Runs a training command to its end: its log, closing metrics, wall time, peak memory and defaults."""
    started = time.monotonic()
    with PeakMemory(gpu) as memory, open(log_file, "w") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    text = log_file.read_text()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed ({log_file}):\n{text[-3000:]}")
    return {"log": text, "metrics": final_metrics(text), "wall_s": time.monotonic() - started,
            "peak_memory_bytes": memory.peak, "defaults": re.findall(r"kubetune: (default .*|distributed: .*)", text)}


def run_training(command: list[str], env: dict[str, str], gpu: bool, log_file: Path) -> dict[str, Any]:
    run = run_logged(command, env, gpu, log_file)
    metrics = run["metrics"]
    return {"tokens_per_second": metrics["num_input_tokens_seen"] / metrics["train_runtime"],
            "train_runtime_s": metrics["train_runtime"], "wall_s": run["wall_s"],
            "peak_memory_bytes": run["peak_memory_bytes"], "tokens": metrics["num_input_tokens_seen"],
            "defaults": run["defaults"]}


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

    document = with_spec(method="sft", model={"source": str(model)}, dataset={"source": str(data)},
                         training=training_keys(args), distributed={"strategy": strategy},
                         checkpointing={"everySteps": args.steps * 10},
                         resources={"gpusPerNode": 1 if gpu else 0}, evaluation={"enabled": False})
    root = Path(tempfile.mkdtemp(prefix=f"kubetune-{strategy}-", dir=scratch))
    objects, ports, folders = rendered_job(document, root, f"uid-{strategy}")
    command, pod = worker_of(objects, folders, ports, env, root)
    if "TORCH_EXTENSIONS_DIR" in env:  # compiled DeepSpeed ops, shared as a node's cache would be
        pod["TORCH_EXTENSIONS_DIR"] = env["TORCH_EXTENSIONS_DIR"]
    return run_training(command, pod, gpu, scratch / f"kubetune-{strategy}.log")


def rendered_job(document: dict[str, Any], root: Path, uid: str):
    """The job rendered and its config written under root as `kubetune run` does: local folders,
    and free local ports for the Services' (the rendezvous, the generation server), so that runs
    beside other jobs on this machine do not collide. (objects, ports, folders)."""
    from local_pods import rendered_config

    from kubetune.local.pods import RunFolders, local_ports

    objects, _ = rendered_config(document, uid=uid)
    ports, folders = local_ports(), RunFolders(root)
    folders.write_config(objects.config_map["data"], ports)
    return objects, ports, folders


def pod_of(stateful_set: dict[str, Any], folders, ports):
    """Pod 0 of a rendered StatefulSet as `kubetune run` runs it (a LocalPod: command and env)."""
    from kubetune.local.pods import local_pod

    spec = stateful_set["spec"]["template"]["spec"]
    return local_pod(spec, f"{stateful_set['metadata']['name']}-0", stateful_set["metadata"]["namespace"], 0,
                     folders, folders.root / "cache", ports)


def worker_of(objects, folders, ports, env: dict[str, str], root: Path) -> tuple[list[str], dict[str, str]]:
    """Worker pod 0's command and environment (on top of env)."""
    from kubetune import contract

    worker = pod_of(objects.stateful_set, folders, ports)
    return worker.command, {**env, **worker.env, contract.ENV_METRICS_PORT: "0",
                            contract.ENV_TERMINATION_LOG: str(root / "termination-log")}


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


# --- GRPO: generate() vs vLLM colocate vs vLLM server ------------------------------------

GRPO_MODES = ("generate", "colocate", "server")
GRPO_LABELS = {"generate": "`generate()` (use_vllm false)", "colocate": "vLLM colocate",
               "server": "vLLM server"}
GRPO_REWARD = "answer_match"  # kubetune's own: a substring test, cheap next to generation
# What the entrypoint says about generating with vLLM (the CPU colocate shim's syncs among it).
GENERATION_NOTES = r"kubetune: (generating with .*|vLLM weight sync .*|warning: .*)"
SERVER_READY_S = 600


def grpo_settings(args) -> dict[str, int]:
    return {"max_steps": args.grpo_steps, "per_device_train_batch_size": args.grpo_batch,
            "num_generations": args.grpo_generations, "max_completion_length": args.grpo_completion_length}


def generate_prompts(folder: Path, rows: int) -> Path:
    """Prompt-only rows for GRPO, each with the `answer` column answer_match scores against."""
    rng = random.Random(2)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as out:
        for _ in range(rows):
            out.write(json.dumps({"prompt": sentence(rng, 12), "answer": rng.choice(WORDS)}) + "\n")
    return folder


def grpo_keys(args, mode: str) -> dict[str, Any]:
    keys = {**grpo_settings(args), "gradient_accumulation_steps": 1, "logging_steps": 1, "seed": 0,
            "learning_rate": 1e-6}
    if mode == "generate":
        return {**keys, "use_vllm": False}
    if mode == "colocate":
        return {**keys, "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}
    return keys  # server: spec.generation sets use_vllm, vllm_mode and the server's address


def grpo_job(args, model: Path, data: Path, gpu: bool, mode: str, root: Path):
    """The GRPO job for one mode, rendered and written (rendered_job)."""
    from conftest import with_spec

    spec = dict(method="grpo", model={"source": str(model)}, dataset={"source": str(data)},
                rewards=[{"function": GRPO_REWARD}], training=grpo_keys(args, mode), distributed={"strategy": "auto"},
                checkpointing={"everySteps": args.grpo_steps * 10}, resources={"gpusPerNode": 1 if gpu else 0},
                evaluation={"enabled": False})
    if mode == "server":
        spec["generation"] = {"gpusPerNode": 1 if gpu else 0}
    return rendered_job(with_spec(**spec), root, f"uid-grpo-{mode}")


def short_rpc_folder(env: dict[str, str], folder: str) -> dict[str, str]:
    """vLLM names ZeroMQ sockets under VLLM_RPC_BASE_PATH (TMPDIR by default); a socket path has at
    most 107 bytes, which a run folder's TMPDIR can pass: then they go under folder (short, in /tmp)."""
    if len(env.get("TMPDIR", "/tmp")) > 60 and "VLLM_RPC_BASE_PATH" not in env:
        return {**env, "VLLM_RPC_BASE_PATH": folder}
    return env


def logged_steps(log: str) -> list[dict[str, Any]]:
    """TRL's per-step metrics lines (logging_steps 1): dicts with completions/mean_length."""
    return [{key: number(value) for key, value in ast.literal_eval(found).items()}
            for found in re.findall(r"\{[^{}]*'completions/mean_length'[^{}]*\}", log)]


def number(value: Any) -> Any:
    """transformers 5 logs metrics as strings of 4 significant digits ('0.1205')."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def grpo_figures(run: dict[str, Any], args) -> dict[str, Any]:
    """Per-run figures from the log. completions = steps x per_device_train_batch_size (one process,
    gradient_accumulation_steps 1, so TRL generates that many per step). Generation time per step is
    its completion tokens (completions/mean_length x completions) over the generation rate kubetune's
    GenerationMeter logs (TRL's generation step timed, weight syncs left out)."""
    from kubetune.contract.progress import GENERATION_RATE_LOG_KEY

    steps, runtime = logged_steps(run["log"]), run["metrics"]["train_runtime"]
    per_step = args.grpo_batch
    completions = len(steps) * per_step
    tokens = sum(step["completions/mean_length"] * per_step for step in steps)
    rates = [step.get(GENERATION_RATE_LOG_KEY) for step in steps]
    generation_s = None
    if steps and all(rates):
        generation_s = sum(step["completions/mean_length"] * per_step / rate for step, rate in zip(steps, rates))
    step_times = [step.get("step_time") for step in steps]  # TRL's own, per step
    later = step_times[1:]
    return {"steps": len(steps), "completions": completions, "completion_tokens": tokens,
            "train_runtime_s": runtime, "seconds_per_step": runtime / len(steps) if steps else None,
            "step_times_s": step_times,
            "seconds_per_step_after_first": sum(later) / len(later) if later and all(later) else None,
            "completions_per_second": completions / runtime,
            "generation_s": generation_s,
            "completions_per_generation_second": completions / generation_s if generation_s else None,
            "generation_tokens_per_second": tokens / generation_s if generation_s else None,
            "wall_s": run["wall_s"], "peak_memory_bytes": run["peak_memory_bytes"], "defaults": run["defaults"],
            "generation_notes": re.findall(GENERATION_NOTES, run["log"]),
            "rewards": [step.get("reward") for step in steps]}


def grpo_entrypoint(args, model: Path, data: Path, scratch: Path, env: dict[str, str], gpu: bool,
                    mode: str) -> dict[str, Any]:
    """generate / colocate: the worker pod's command (the kubetune entrypoint, `python -m
    trainer_entrypoint train`) on GPU 0, as `kubetune run` starts it; server: the same, with the
    generation server's pod (`python -m trainer_entrypoint generation-server`) on GPU 1 first."""
    root = Path(tempfile.mkdtemp(prefix=f"kubetune-grpo-{mode}-", dir=scratch))
    objects, ports, folders = grpo_job(args, model, data, gpu, mode, root)
    command, pod_env = worker_of(objects, folders, ports, env, root)
    if gpu:
        pod_env["CUDA_VISIBLE_DEVICES"] = "0"
    server, ready_s = None, None
    with tempfile.TemporaryDirectory(prefix="vllm-rpc-", dir="/tmp") as rpc:
        try:
            if mode == "server":
                server, ready_s = start_generation_server(objects, folders, ports, env, gpu)
            run = run_logged(command, short_rpc_folder(pod_env, rpc), gpu, scratch / f"grpo-{mode}.log")
        finally:
            if server:
                server.kill()
    figures = grpo_figures(run, args)
    return {**figures, "mode": mode, "server_ready_s": ready_s,
            "measured": "GRPO through the kubetune entrypoint" + (
                "; generation on the server's GPU (GPU 1), weights pushed over NCCL" if mode == "server" else "")}


def start_generation_server(objects, folders, ports, env: dict[str, str], gpu: bool):
    """The generation server's pod (rendered from spec.generation) started and ready: (pod, seconds)."""
    from kubetune.local.pods import kill_tree

    server = pod_of(objects.generation_stateful_set, folders, ports)
    server.env.update({key: env[key] for key in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM") if key in env})
    if gpu:
        server.env["CUDA_VISIBLE_DEVICES"] = "1"
    else:
        server.env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.monotonic()
    server.start()
    try:
        while not server.ready:
            if not server.running:
                raise SystemExit(f"the generation server exited ({server.log_file}):\n{server.last_log_lines(40)}")
            if time.monotonic() - started > SERVER_READY_S:
                raise SystemExit(f"the generation server is not ready after {SERVER_READY_S} s ({server.log_file}):\n"
                                 f"{server.last_log_lines(40)}")
            time.sleep(1)
    except BaseException:
        if server.process:
            kill_tree(server.process)
        raise
    return server, time.monotonic() - started


def grpo_server_client(args, model: Path, data: Path, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    """Server mode on a CPU: the real generation server's pod, and generation only, through TRL's own
    client with what GRPO asks it each step (per_device_train_batch_size / num_generations prompts'
    token ids, n = num_generations, max_tokens = max_completion_length, temperature 1), max_steps
    times after one warm-up request of the same shape (vLLM's first forward on a CPU takes seconds;
    in colocate the weight sync's probe pays it). TRL's weight sync to the server is NCCL (CUDA
    only), so no training step runs."""
    import transformers
    from trl.generation.vllm_client import VLLMClient

    root = Path(tempfile.mkdtemp(prefix="kubetune-grpo-server-", dir=scratch))
    objects, ports, folders = grpo_job(args, model, data, False, "server", root)
    config = json.loads((folders.root / "config" / "config.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    prompts_per_step = args.grpo_batch // args.grpo_generations
    server, ready_s = start_generation_server(objects, folders, ports, env, gpu=False)
    try:
        training = config["training"]
        client = VLLMClient(host=training["vllm_server_host"], server_port=training["vllm_server_port"])
        completions, tokens, request_s = 0, 0, []
        for step in range(-1, args.grpo_steps):  # -1: a warm-up request, not counted
            batch = rows[(step + 1) * prompts_per_step:(step + 2) * prompts_per_step]
            ids = [token_ids(tokenizer, row["prompt"]) for row in batch]
            started = time.perf_counter()
            answer = client.generate(prompts=ids, n=args.grpo_generations, max_tokens=args.grpo_completion_length,
                                     temperature=1.0)
            request_s.append(time.perf_counter() - started)
            if step >= 0:
                completions += len(answer["completion_ids"])
                tokens += sum(len(completion) for completion in answer["completion_ids"])
    finally:
        server.kill()
    (scratch / "grpo-server.log").write_text(server.log_file.read_text(errors="replace"))
    seconds = sum(request_s[1:])
    return {"mode": "server", "client_only": True, "steps": None, "requests": args.grpo_steps,
            "warmup_request_s": request_s[0], "request_s": request_s[1:],
            "completions": completions, "completion_tokens": tokens, "generation_s": seconds,
            "completions_per_generation_second": completions / seconds, "completions_per_second": None,
            "generation_tokens_per_second": tokens / seconds, "seconds_per_step": None,
            "seconds_per_step_after_first": None, "train_runtime_s": None,
            "server_ready_s": ready_s, "wall_s": ready_s + sum(request_s), "peak_memory_bytes": None,
            "measured": "generation only, TRL's VLLMClient against the generation server (no training: "
                        "TRL's weight sync to a server needs CUDA)"}


def token_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as GRPO sends it: the chat template, with the generation prompt."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def grpo(args, model: Path, scratch: Path, env: dict[str, str], gpu: bool) -> dict[str, Any]:
    import torch

    data = generate_prompts(scratch / "grpo-data", max(64, 4 * args.grpo_steps * args.grpo_batch))
    runs = {mode: grpo_entrypoint(args, model, data, scratch, env, gpu, mode) for mode in ("generate", "colocate")}
    if not gpu:
        runs["server"] = grpo_server_client(args, model, data, scratch, env)
    elif torch.cuda.device_count() >= 2:
        runs["server"] = grpo_entrypoint(args, model, data, scratch, env, gpu, "server")
    else:
        runs["server"] = {"mode": "server", "skipped": "one GPU: server mode needs two (the generation server on "
                                                       "GPU 1, training on GPU 0)"}
    settings = grpo_settings(args)
    return {"settings": {**settings, "reward": GRPO_REWARD, "prompts": "generated, 12 words, chat template"},
            "definitions": {
                "completions": "steps x per_device_train_batch_size (one process, gradient_accumulation_steps 1)",
                "completions_per_second": "completions / the Trainer's train_runtime (vLLM's engine start, in the "
                                          "trainer's constructor, is outside it)",
                "completions_per_generation_second": "completions / time in TRL's generation step, weight syncs "
                                                     "left out (kubetune's GenerationMeter); server on a CPU: the "
                                                     "client's generate calls after a warm-up request",
                "seconds_per_step": "train_runtime / steps; seconds_per_step_after_first: TRL's step_time, mean "
                                    "over the steps after the first"},
            "runs": runs}


# --- report ----------------------------------------------------------------------------


def with_mfu(result: dict[str, Any], flops_per_token: float, peak: Optional[float]) -> dict[str, Any]:
    from kubetune.contract.plan import mfu

    return {**result, "mfu": mfu(result["tokens_per_second"], flops_per_token, peak) if peak else None}


def markdown(results: dict[str, Any]) -> str:
    def row(name, r, ratio=""):
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "-"
        return (f"| {name} | {r['tokens_per_second']:,.0f} | {mfu} | {r['peak_memory_bytes'] / 1024**3:.2f} | "
                f"{r['train_runtime_s']:.1f} | {ratio} |")

    lines = [f"Device: {results['device']}; model: {results['model']}; {results['settings']}"]
    sft, zero = results.get("sft"), results.get("zero")
    if sft or zero:
        lines += ["", "| training run | tokens/s | MFU | peak memory GiB | train s | ratio |",
                  "|---|---|---|---|---|---|"]
    if sft:
        lines += [row("plain `trl sft`, TRL defaults", sft["trl sft"]),
                  row("kubetune entrypoint, its defaults", sft["kubetune"], f"{results['ratio']:.2f}x")]
    if zero:
        zero3 = zero["zero3"]["tokens_per_second"] / zero["zero2"]["tokens_per_second"]
        lines += [row("kubetune, ZeRO-2", zero["zero2"]),
                  row("kubetune, ZeRO-3", zero["zero3"], f"{zero3:.2f}x of ZeRO-2")]
    if results.get("generation"):
        lines += ["", "| generation | output tokens/s | load s | generate s |", "|---|---|---|---|"]
        for engine, r in results["generation"].items():
            lines.append(f"| {engine} | {r['tokens_per_second']:,.0f} | {r['load_s']:.1f} | {r['generate_s']:.1f} |")
    if results.get("grpo"):
        lines += ["", grpo_markdown(results["grpo"])]
    if sft:
        lines += ["", "kubetune defaults applied:"] + [f"- {line}" for line in sft["kubetune"]["defaults"]]
    return "\n".join(lines)


def grpo_markdown(grpo: dict[str, Any]) -> str:
    def shown(value, digits=1):
        return "-" if value is None else f"{value:,.{digits}f}"

    s = grpo["settings"]
    lines = [f"GRPO, {s['max_steps']} steps, per-device batch {s['per_device_train_batch_size']}, "
             f"{s['num_generations']} generations of at most {s['max_completion_length']} tokens, reward "
             f"{s['reward']}. Completions/s: over the Trainer's train_runtime, and over the time in TRL's "
             f"generation step (weight syncs left out).", "",
             "| GRPO run | completions/s (train time) | completions/s (generation time) | generation tokens/s | "
             "s/step | s/step after the first | steps | completions | peak memory GiB | server ready s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in GRPO_MODES:
        r = grpo["runs"].get(mode)
        if r is None:
            continue
        label = GRPO_LABELS[mode]
        if "skipped" in r:
            lines.append(f"| {label} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        if r.get("client_only"):
            label += ", generation only (TRL's client; no training step: weight sync needs CUDA)"
        memory = None if r.get("peak_memory_bytes") is None else r["peak_memory_bytes"] / 1024**3
        lines.append(f"| {label} | {shown(r['completions_per_second'])} | "
                     f"{shown(r['completions_per_generation_second'])} | "
                     f"{shown(r['generation_tokens_per_second'], 0)} | "
                     f"{shown(r['seconds_per_step'], 2)} | {shown(r['seconds_per_step_after_first'], 2)} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | "
                     f"{r['completions']} | {shown(memory, 2)} | {shown(r.get('server_ready_s'))} |")
    return "\n".join(lines)


PARTS = ("sft", "zero", "generation", "grpo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="The tiny model on the CPU: tests the harness.")
    parser.add_argument("--out", default="bench-results/gpu")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="Parts to run (default: all).")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None, help="Default: TRL's (1024); --tiny: 128.")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--grpo-steps", type=int, default=None, help="Default 10; --tiny: 2.")
    parser.add_argument("--grpo-batch", type=int, default=None,
                        help="per_device_train_batch_size. Default 8; --tiny: 2.")
    parser.add_argument("--grpo-generations", type=int, default=None, help="num_generations. Default 8; --tiny: 2.")
    parser.add_argument("--grpo-completion-length", type=int, default=None,
                        help="max_completion_length. Default 256; --tiny: 8.")
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
    args.grpo_steps = args.grpo_steps or (2 if args.tiny else 10)
    args.grpo_batch = args.grpo_batch or (2 if args.tiny else 8)
    args.grpo_generations = args.grpo_generations or (2 if args.tiny else 8)
    args.grpo_completion_length = args.grpo_completion_length or (8 if args.tiny else 256)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="kubetune-gpu-bench-", dir=os.environ.get("TMPDIR")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's default sizing fails on small hosts
    config = model_config(args.tiny)
    model = build_model(config, scratch / "model")

    from kubetune.contract.gpus import gpu_named
    from kubetune.contract.plan import ModelShape

    device = torch.cuda.get_device_name(0) if gpu else "CPU"
    row = gpu_named(device) if gpu else None
    peak = row.peak_flops if row else None
    flops = ModelShape.from_config(config).flops_per_token(args.max_length or 1024)
    results: dict[str, Any] = {
        "device": device, "model": "builtin tiny shape" if args.tiny else "Qwen2.5-0.5B shape (random weights)",
        "settings": f"{args.steps} steps, per-device batch {args.batch}, max_length {args.max_length or 1024}, "
                    f"seed 0; generation: {args.prompts} prompts x {args.new_tokens} new tokens, greedy",
        "flops_per_token": flops, "peak_flops": peak, "seconds": {}}

    def timed(part, run):
        started = time.monotonic()
        results[part] = run()
        results["seconds"][part] = time.monotonic() - started

    if "sft" in args.only or "zero" in args.only:
        data = generate_data(scratch / "data", 256 if args.tiny else 4000, 100 if args.tiny else 700)
    if "sft" in args.only:
        timed("sft", lambda: {name: with_mfu(r, flops, peak) for name, r in {
            "trl sft": trl_sft(args, model, data, scratch, env, gpu),
            "kubetune": entrypoint(args, model, data, scratch, env, gpu, "auto")}.items()})
        results["ratio"] = (results["sft"]["kubetune"]["tokens_per_second"]
                            / results["sft"]["trl sft"]["tokens_per_second"])
    if "zero" in args.only:
        timed("zero", lambda: {stage: with_mfu(entrypoint(args, model, data, scratch, env, gpu, stage), flops, peak)
                               for stage in ("zero2", "zero3")})
    if "generation" in args.only:
        timed("generation", lambda: {engine: generation_in_process(engine, model, args, env, scratch)
                                     for engine in ("vllm", "transformers")})
    if "grpo" in args.only:
        timed("grpo", lambda: grpo(args, model, scratch, env, gpu))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
