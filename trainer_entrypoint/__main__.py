"""python -m trainer_entrypoint {initialize | train | worker | evaluate | publish | generation-server | build-tiny}

initialize  the initializer Job's command: fetches the job's hf:// and s3:// sources into the cache
train       the worker pod's command: checks completion, then runs torchrun (one per pod)
worker      one torchrun rank: trains, checkpoints, saves, records completion
evaluate    the evaluation Job's command: metrics of the trained model (and its base)
publish     the publish Job's command: uploads the model and its card to spec.output.publish
generation-server  the generation server pod's command: vLLM's server for spec.generation
build-tiny  make builtin://tiny (model, tokenizer, data) and print where it is
"""

import sys


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "initialize":
        from .initialize.main import main as initialize

        return initialize()
    if command == "train":
        from .train.launcher import main as launch

        return launch()
    if command == "worker":
        from .train.worker import main as work

        return work()
    if command == "evaluate":
        from .evaluate.main import main as evaluate

        return evaluate()
    if command == "publish":
        from .publish import main as publish

        return publish()
    if command == "generation-server":
        from .generation_server import main as serve

        return serve()
    if command == "build-tiny":
        from .builtin import tiny_dir

        print(tiny_dir())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
