"""Errors speechlm raises for bad input. The CLI prints them as one line and exits non-zero."""


class SpeechLMError(Exception):
    """Base class: a problem with the user's input, named with its file or field."""


class AudioError(SpeechLMError):
    """An audio file cannot be read or holds unusable samples."""


class ManifestError(SpeechLMError):
    """A manifest line is malformed or misses a required field."""


class CheckpointError(SpeechLMError):
    """A model directory or checkpoint is missing files or does not match the code."""
