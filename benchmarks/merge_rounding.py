"""`python -m benchmarks.merge_rounding RUN_OR_ADAPTER_DIR...`: how much of a run's LoRA update survives when the
merged weights are stored in each GGUF type llama.cpp could serve.

Why the playground's merged file is Q8_0, not the base's own Q4_1 (`alignkit/llamacpp.py`): a 4-bit file is read
faster per token, but the base's weights already sit on its 4-bit grid, and an update smaller than half a grid step
rounds back to the base weight. For each type this prints (and writes as JSON with `--out FILE`) two figures over
every tensor the adapters update: `kept`, the projection of what was stored minus the base onto the update, over the
update's squared norm (1.0: all of it; 0: none), and `error`, the norm of the merged weights' rounding error over the
update's norm. Q8_0's error is unbiased noise of about the update's size for a short SFT, which keeps the update on
average; re-rounding the base's 4-bit grid onto Q5_1's adds noise several times larger than the update.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TYPES = ("Q4_1", "Q5_1", "Q8_0")


def update_kept(adapter_dirs: list[Path], types: tuple[str, ...] = TYPES) -> dict[str, dict[str, float]]:
    """{type: {"kept", "error"}} over every tensor the adapters update, on the embedded base (see the module)."""
    import gguf
    import numpy as np

    from alignkit import llamacpp, models

    base = models.embedded_gguf()
    updates = llamacpp.lora_updates(adapter_dirs, base)
    totals = {t: {"projected": 0.0, "error": 0.0} for t in types}
    energy = 0.0
    for tensor in gguf.GGUFReader(str(base)).tensors:
        if tensor.name not in updates:
            continue
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        update = updates[tensor.name].astype(np.float32)
        energy += float((update * update).sum())
        for name in types:
            qtype = gguf.GGMLQuantizationType[name]
            stored = gguf.quants.dequantize(gguf.quants.quantize(weights + update, qtype), qtype)
            totals[name]["projected"] += float(((stored - weights) * update).sum())
            totals[name]["error"] += float(((stored - weights - update) ** 2).sum())
    return {
        name: {"kept": t["projected"] / energy, "error": (t["error"] / energy) ** 0.5} for name, t in totals.items()
    }


def adapter_dirs(paths: list[str]) -> list[Path]:
    """Adapter dirs from run dirs (their lineage's adapters, base first) or adapter dirs as given."""
    from alignkit import lineage, runs

    dirs: list[Path] = []
    for path in map(Path, paths):
        if (path / "adapter_config.json").is_file():
            dirs.append(path)
        else:
            run = runs.open_run(str(path))
            dirs += [r.adapter_dir for r in lineage.adapter_runs(run.lineage)]
    return dirs


def main(argv: list[str]) -> dict[str, Any]:
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        out, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2 :]
    dirs = adapter_dirs(argv)
    result = {"adapters": [str(d) for d in dirs], "types": update_kept(dirs)}
    for name, figures in result["types"].items():
        print(f"{name}: kept {figures['kept']:.3f} of the update, storage error {figures['error']:.2f}x its norm")
    if out:
        out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
