"""flowbatch: a declarative, file-driven batch runner for HPC clusters."""

__version__ = "0.1.0"
