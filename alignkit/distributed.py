"""Runs under `accelerate launch` (DDP, DeepSpeed, FSDP): which process is the main one, and one answer for all.

alignkit adds no distribution layer of its own: accelerate starts the processes and TRL's trainers do the data and
model parallelism. What is left here is the run directory: every process must agree on one path (a new run's name has
a random id), and only the main process writes it (config, manifest, metrics, log, saved adapter).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from alignkit.errors import AlignkitError

T = TypeVar("T")


def world_size() -> int:
    """Processes in this run (`WORLD_SIZE`, set by `accelerate launch` / torchrun); 1 when launched plainly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """The process that writes the run directory and prints summaries."""
    return rank() == 0


def is_local_main() -> bool:
    """The first process on its machine: the one whose lines the machine's terminal shows (`say_once`)."""
    return local_rank() == 0


# How long a process other than its machine's first waits before it says its error: where every process hit the same
# error (the same data and config), the first one has said it and exited by then, and the launcher has stopped the
# others (torchrun stops the whole group as soon as one process exits with an error).
ERROR_GRACE_S = 5.0


def say_once(say: Callable[[], None]) -> None:
    """Call `say` (print a user-fixable error) once per machine, not once per process: the machine's first process
    says it at once; another says it only if it is still running `ERROR_GRACE_S` later, i.e. when the error was its
    own (a file only it could not read), so that it is never lost."""
    if world_size() > 1 and not is_local_main():
        time.sleep(ERROR_GRACE_S)
    say()


def engine() -> str | None:
    """The engine accelerate was configured with: deepspeed | fsdp | ddp (None for a single process)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "fsdp"
    return "ddp" if world_size() > 1 else None


def manifest() -> dict[str, Any]:
    """What the run manifest records about the processes that trained it."""
    return {"world_size": world_size(), "engine": engine()}


def device(kind: str) -> str:
    """This process's device: `cuda:<local rank>` on GPUs (each process its own), else `kind` as is."""
    return f"cuda:{local_rank()}" if kind == "cuda" and world_size() > 1 else kind


def state() -> Any:
    """accelerate's process state (starts the process group: gloo on CPUs, nccl on GPUs)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def from_main(make: Callable[[], T]) -> T:
    """`make()` evaluated on the main process only, its result (or its AlignkitError) handed to every process.

    Used for what must be identical everywhere but is decided once: a new run directory's name and its checks.
    """
    if world_size() == 1:
        return make()
    from accelerate.utils import broadcast_object_list

    process = state()
    box: list[Any] = [None]
    if process.is_main_process:
        try:
            box[0] = ("value", make())
        except AlignkitError as exc:
            box[0] = ("error", exc)
    broadcast_object_list(box)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def wait_for_everyone() -> None:
    """A barrier (no-op for a single process): e.g. the run directory exists before the others go on."""
    if world_size() > 1:
        state().wait_for_everyone()


def in_order(numbered: list[tuple[int, T]]) -> list[T]:
    """Every process's `(index, item)` pairs, gathered onto each process, as one list in index order: the work one
    list was split into (`generate`'s prompts), put back together (as is for a single process)."""
    if world_size() > 1:
        from accelerate.utils import gather_object

        state()
        numbered = gather_object(numbered)
    return [item for _, item in sorted(numbered, key=lambda pair: pair[0])]
