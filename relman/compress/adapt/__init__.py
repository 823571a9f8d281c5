"""Adaptation: full and LoRA fine-tuning, differential privacy, distillation, the shared training
loop, and merges (adapter into base, federated averaging)."""
