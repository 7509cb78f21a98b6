"""`alignkit export`: a run's model (base + its adapter lineage) merged into one plain Hugging Face model dir.

The output loads with `AutoModelForCausalLM.from_pretrained(out)` and no peft or alignkit: safetensors weights, config,
generation config, tokenizer with its chat template. Optionally also a GGUF file, written by llama.cpp's
`convert_hf_to_gguf.py` when that tooling is installed (the `gguf` package alone reads GGUF, it does not convert);
without it, a run on a GGUF base (the embedded model) has its LoRA adapters merged into that GGUF file by
llama-cpp-python (`llamacpp.write_merged`, as the playground serves it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from alignkit import lineage, llamacpp, paths, runs
from alignkit.errors import AlignkitError, option
from alignkit.hardware import Precision

DTYPES = {"auto": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
GGUF_CONVERTER = "convert_hf_to_gguf.py"
EXPORT_RECORD = "alignkit-export.json"  # where the model came from; also marks a dir export may replace


def export(
    run_dir: str | Path,
    out: str | Path,
    dtype: str = "auto",
    gguf: bool = False,
    gguf_type: str = "f16",
    overwrite: bool = False,
) -> Path:
    """Merge the run's adapters into its base and save the result to `out` (safetensors); returns `out`.

    `dtype`: auto (the precision the run trained in) | fp32 | bf16 | fp16. A reward run exports its classifier model.
    """
    if dtype not in DTYPES:
        raise AlignkitError(f"{option('dtype', dtype)} is not one of {', '.join(DTYPES)}", "pass one of them")
    run = runs.open_run(run_dir)
    out = Path(out)
    paths.check_output_dir(out, overwrite, EXPORT_RECORD, "an exported model")
    base = Path(run.model_config.name).expanduser()
    if base.is_dir() and out.resolve() == base.resolve():  # an earlier export that later runs were trained on
        raise AlignkitError(
            f"{option('out', out)} is the base model of {run.path}: replacing it would change what the run (and "
            "every run on that base) is built from",
            "export to a new folder",
        )
    converter = gguf_converter(run, gguf_type) if gguf else None  # missing tooling: fail before any work
    precision = export_precision(run, dtype)

    chain = lineage.adapter_runs(run.lineage)  # the adapters merged, into the safetensors model and the GGUF file
    model, tokenizer = load_for_export(run, chain, precision)
    merge_into_gguf = gguf and converter is None
    adapter_dirs = [r.adapter_dir for r in chain]
    if merge_into_gguf and (reason := llamacpp.unsupported(run.model_config, adapter_dirs, tokenizer)):
        raise AlignkitError(f"GGUF export: {reason}", f"install llama.cpp's {GGUF_CONVERTER} (LLAMA_CPP_DIR)")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)  # with the chat template (chat_template.jinja)
    record = {
        "source_run": str(run.path.resolve()),
        "stage": run.stage,
        "lineage": run.lineage,
        "base_model": run.manifest.get("model", {}).get("name"),
        "dtype": precision.dtype,
    }
    (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    readable_as_umask_allows(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    if converter is not None:
        write_gguf(converter, out, gguf_type)
    elif merge_into_gguf:
        base = llamacpp.base_gguf(run.model_config)
        llamacpp.write_merged(adapter_dirs, base, out / f"{out.name}-{gguf_type}.gguf", gguf_type)
    return out


def readable_as_umask_allows(folder: Path) -> None:
    """Give every file in `folder` the mode a new file gets (0o666 less the umask). safetensors writes its weights
    0o600 (an atomic temp file), so a model shipped into a container or a shared folder was unreadable to any other
    user, while its config and tokenizer beside it were readable."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def export_precision(run: runs.Run, dtype: str) -> Precision:
    """Merging runs on the CPU (no GPU memory needed) in the run's training precision unless another is asked for."""
    name = DTYPES[dtype] or run.manifest.get("precision") or "float32"
    return Precision("cpu", name, "export")


def load_for_export(run: runs.Run, chain: list[runs.Run], precision: Precision) -> tuple[Any, Any]:
    """The run's model unquantised (a QLoRA run merges into the full-precision base) on the CPU: `chain`'s adapters
    (`lineage.adapter_runs`) merged into the base."""
    if run.stage == "reward":
        scorer = lineage.load_scorer(run.path, precision=precision)
        return scorer.model, scorer.tokenizer
    model_cfg = dataclasses.replace(run.model_config, attn_implementation=None, quantization=None)
    tokenizer, _ = lineage.lineage_tokenizer(model_cfg, run.lineage)
    return lineage.load_merged(chain, model_cfg, precision, tokenizer), tokenizer


def gguf_converter(run: runs.Run, gguf_type: str) -> Path | None:
    """llama.cpp's converter script: `$LLAMA_CPP_DIR/convert_hf_to_gguf.py`, or `convert_hf_to_gguf.py` on PATH;
    without it, None where llama-cpp-python can merge the run's adapters into its GGUF base instead."""
    candidates = []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]) / GGUF_CONVERTER)
    on_path = shutil.which(GGUF_CONVERTER)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if run.stage != "reward" and llamacpp.installed() and llamacpp.base_gguf(run.model_config) is not None:
        if gguf_type not in llamacpp.FILE_TYPES:
            raise AlignkitError(
                f"{option('gguf_type', gguf_type)}: merged into the GGUF base, the types are "
                f"{', '.join(llamacpp.FILE_TYPES)}",
                f"pass one of them, or install llama.cpp's {GGUF_CONVERTER} (LLAMA_CPP_DIR)",
            )
        return None
    raise AlignkitError(
        "GGUF export needs llama.cpp's convert_hf_to_gguf.py, which is not installed (a run on a GGUF base, such as "
        "the embedded model, needs llama-cpp-python instead)",
        "clone llama.cpp and set LLAMA_CPP_DIR to it (pip install -r its requirements.txt), or drop "
        + option("gguf", True),
    )


def write_gguf(converter: Path, model_dir: Path, gguf_type: str) -> Path:
    target = model_dir / f"{model_dir.name}-{gguf_type}.gguf"
    command = [sys.executable, str(converter), str(model_dir), "--outfile", str(target), "--outtype", gguf_type]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AlignkitError(f"GGUF conversion of {model_dir} failed ({tail[0][:200]})", "the safetensors dir is fine")
    return target
