"""Command modules of the ``agentsim`` CLI; each exposes ``register(subparsers)``."""
