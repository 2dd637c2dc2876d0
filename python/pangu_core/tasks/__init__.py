"""The embedded default: generated reasoning tasks, a programmatic teacher, tokenizer and tiny model."""
