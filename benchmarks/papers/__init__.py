"""Reproductions of the agent-serving papers (``make papers``); see docs/papers.md."""
