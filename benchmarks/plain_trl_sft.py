"""Plain TRL SFT, as a user would write it from TRL's docs: the baseline alignkit's `sft` is measured against.

`python benchmarks/plain_trl_sft.py MODEL_DIR DATA.jsonl STEPS [--careful]`
- default: `SFTConfig` untouched except what any script sets (output dir, steps, batch size, learning rate, LoRA);
- `--careful`: what a careful user picks on a CPU: no gradient checkpointing, and the machine's native precision
  (`--bf16`: weights loaded in bf16 and `bf16=True`, on a CPU with native bf16; else fp32).
"""

import sys

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from datasets import load_dataset


def main(
    model_dir: str, data_file: str, steps: int, careful: bool = False, bf16: bool = False, out: str = "plain-sft-out"
) -> SFTTrainer:
    model = AutoModelForCausalLM.from_pretrained(model_dir, **({"dtype": torch.bfloat16} if bf16 else {}))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = load_dataset("json", data_files=data_file, split="train")
    # transformers refuses bf16 on a CPU unless told so with use_cpu
    on_cpu = not torch.cuda.is_available()
    careful_flags = {"bf16": bf16, "use_cpu": on_cpu, "gradient_checkpointing": False} if careful else {}
    args = SFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        max_length=512,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        **careful_flags,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), careful="--careful" in sys.argv, bf16="--bf16" in sys.argv)
