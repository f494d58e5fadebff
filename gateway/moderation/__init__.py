"""Moderation classifiers beside the built-in lexicon (docs/classifiers.md): the settings, the
clients of the external classifiers (OpenAI moderation, Llama Guard), their cache, circuit
breaker and metrics, and the `Moderator` that gives each request its `Classification`.

The policy language stays pure: it evaluates on the `Classification` value made here."""

from gateway.errors import ClassifierFailed
from gateway.moderation.service import (
    CLASSIFIER_ERROR,
    IMAGE_NOT_MODERATED,
    ModerationOutcome,
    Moderator,
)
from gateway.moderation.settings import ExternalClassifier, ModerationSettings

__all__ = [
    "CLASSIFIER_ERROR",
    "IMAGE_NOT_MODERATED",
    "ClassifierFailed",
    "ExternalClassifier",
    "ModerationOutcome",
    "ModerationSettings",
    "Moderator",
]
