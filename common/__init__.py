"""Shared building blocks of the gpt4batch services: messages, settings, bus, logging, metrics."""
