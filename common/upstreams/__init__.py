"""Clients for the upstream GPT services, sharing one error model."""
