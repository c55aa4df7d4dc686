"""Declares bakup's optional C extension; everything else is in pyproject.toml.

The extension lives here because setuptools still calls its pyproject.toml table for extension
modules experimental and warns on every install.
"""

from setuptools import Extension, setup

# The C row scanner is optional: without a compiler bakup installs and uses its Python twin.
setup(ext_modules=[Extension("bakup._rowscan", sources=["bakup/_rowscan.c"], optional=True)])
