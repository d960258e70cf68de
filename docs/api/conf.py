"""Sphinx configuration of orthoref's API reference: ``sphinx-build -W -b html docs/api docs/api/_build``
(``pip install -e ".[docs]"``). Every page is generated from the docstrings (numpydoc convention)."""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import orthoref  # noqa: E402

project = "orthoref"
version = release = orthoref.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "numpydoc"]
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
