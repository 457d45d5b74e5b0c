from setuptools import setup
setup()  # all metadata lives in pyproject.toml; this shim is for tools that still call setup.py
