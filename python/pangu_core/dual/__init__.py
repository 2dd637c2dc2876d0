"""The dual system: fast / slow / auto modes, the chat format, mode selection and self-repair."""
