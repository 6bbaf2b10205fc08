"""Shim for Apache Beam's `--setup_file`, which stages a package through setup.py; everything is in pyproject.toml."""

from setuptools import setup

setup()
