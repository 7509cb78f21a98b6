"""Peak memory of `alignkit pretrain` on a text corpus held in memory vs streamed (`data.streaming`).

`python -m benchmarks.pretrain_streaming MODEL_DIR [CORPUS_MB]` writes a corpus of CORPUS_MB (default 40) of the bundled
domain paragraphs, numbered so none repeats, as 8 .txt files, and trains each variant for a few steps in its own
process (so its peak RSS is its own): `memory` (the rows in lists, tokenized and packed up front), `stream`
(datasets' IterableDataset, tokenized and packed as training reads it) and `baseline` (the same run on 8 small files:
what the model, the libraries and training take). Prints JSON; no figure is asserted. Use a small model (the unit
tests' `build_tiny_model`), so that the corpus, not the model, is what is measured.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignkit.paths import bundled_data

STEPS = 4


def write_corpus(folder: Path, megabytes: float) -> Path:
    paragraphs = [json.loads(line)["text"] for line in bundled_data("domain_text.jsonl").read_text().splitlines()]
    folder.mkdir(parents=True)
    per_file, number = megabytes * 1e6 / 8, 0
    for part in range(8):
        with (folder / f"part{part}.txt").open("w", encoding="utf-8") as file:
            written = 0
            while written < per_file:
                text = f"{number}. {paragraphs[number % len(paragraphs)]}\n\n"
                written += file.write(text)
                number += 1
    return folder


def variant(name: str, model: str, corpus: str, out: str) -> None:
    """One variant in this process: print its wall time and peak RSS as JSON."""
    import alignkit

    started = time.perf_counter()
    run = alignkit.pretrain(
        data={"paths": [corpus], "streaming": name == "stream", "validation_split": 0},
        model={"name": model},
        out=out,
        trainer={"max_steps": STEPS, "max_length": 256},
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    figures = {"wall_s": time.perf_counter() - started, "peak_rss_mb": peak, "train_rows": run.metrics["train_rows"]}
    print(json.dumps({"variant": name} | figures))


def main(model: str, megabytes: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {
            "memory": write_corpus(Path(tmp) / "big", megabytes),
            "baseline": write_corpus(Path(tmp) / "small", 0.1),
        }
        corpora["stream"] = corpora["memory"]
        results = {}
        for name in ("baseline", "memory", "stream"):
            command = [sys.executable, "-m", "benchmarks.pretrain_streaming", "--variant", name, model]
            command += [str(corpora[name]), str(Path(tmp) / f"run-{name}")]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[name] = json.loads(output.strip().splitlines()[-1])
    over = {name: results[name]["peak_rss_mb"] - results["baseline"]["peak_rss_mb"] for name in ("memory", "stream")}
    summary = {
        "corpus_mb": megabytes,
        "steps": STEPS,
        "variants": results,
        "rss_over_baseline_mb": over,
        "stream_vs_memory_rss_over_baseline": over["stream"] / over["memory"] if over["memory"] > 0 else None,
        "stream_vs_memory_wall": results["stream"]["wall_s"] / results["memory"]["wall_s"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if sys.argv[1] == "--variant":
        variant(*sys.argv[2:6])
    else:
        main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 40)
