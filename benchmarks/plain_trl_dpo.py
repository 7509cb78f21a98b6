"""Plain TRL DPO, as a user would write it from TRL's docs: the policy is the SFT model, the reference a second copy.

`python benchmarks/plain_trl_dpo.py BASE_MODEL_DIR SFT_ADAPTER_DIR PAIRS.jsonl STEPS [--bf16]`
No gradient checkpointing and the machine's native precision (`--bf16` on a CPU with native bf16, else fp32); a new
LoRA adapter on the SFT model, a separately loaded SFT model as `ref_model`.
"""

import sys

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from datasets import load_dataset


def load_sft_model(base_dir: str, adapter_dir: str, bf16: bool):
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def main(
    base_dir: str, adapter_dir: str, data_file: str, steps: int, bf16: bool = False, out: str = "plain-dpo-out"
) -> DPOTrainer:
    model = load_sft_model(base_dir, adapter_dir, bf16)
    ref_model = load_sft_model(base_dir, adapter_dir, bf16)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    dataset = load_dataset("json", data_files=data_file, split="train")
    args = DPOConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-5,
        max_length=512,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU unless told so
        gradient_checkpointing=False,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), bf16="--bf16" in sys.argv)
