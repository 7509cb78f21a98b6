"""Plain TRL GRPO, as a user would write it from TRL's docs: the baseline for `alignkit rl`.

`python benchmarks/plain_trl_grpo.py BASE_MODEL_DIR SFT_ADAPTER_DIR PROMPTS.jsonl STEPS [--bf16]`
No gradient checkpointing and the machine's native precision (`--bf16` on a CPU with native bf16, else fp32); a new
LoRA adapter on the merged SFT model (TRL's reference: the same model with the adapter disabled), the same reward as
the alignkit run it is compared with (`concise`: minus the reply's word count), the same batch, group and completion
sizes.
"""

import sys

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from datasets import load_dataset


def concise(completions, **kwargs) -> list[float]:
    return [-float(len(c[-1]["content"].split())) for c in completions]


def main(
    base_dir: str, adapter_dir: str, prompts_file: str, steps: int, bf16: bool = False, out: str = "plain-grpo-out"
) -> GRPOTrainer:
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    dataset = load_dataset("json", data_files=prompts_file, split="train")
    args = GRPOConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=48,
        learning_rate=2e-5,
        beta=0.04,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU unless told so
        gradient_checkpointing=False,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=concise,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), bf16="--bf16" in sys.argv)
