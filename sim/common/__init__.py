"""Shared plumbing below every stage: errors, atomic file writing and TOML loading, embedded paths, progress bars."""
