"""The dual system's format: fast / slow / auto modes in the chat template, and response parsing.

What exists: :mod:`.chat_format` (prompt rendering per mode, the chat template) and
:mod:`.response` (thinking and answer parts of a response). Not built yet: mode labels and
fusion training, the auto-mode selector and repetition self-repair.
"""
