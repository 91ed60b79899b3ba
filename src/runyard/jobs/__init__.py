"""Declared jobs: TOML job files, their typed parameters and argv templates."""

from runyard.jobs.registry import JobRegistry, JobSnapshot
from runyard.jobs.spec import JobSpec, LoadError

__all__ = ["JobRegistry", "JobSnapshot", "JobSpec", "LoadError"]
