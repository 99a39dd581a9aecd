"""Finetuning with persona monitoring: chat datasets, ``tune`` (LoRA or full, resumable),
preventative steering, screening of training data and the finetuning shift."""
