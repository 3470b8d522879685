"""Sphinx configuration of the ntkfast documentation.

Build (from the repository root, after ``pip install ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The gallery (``examples/`` at the repository root) runs during the build with the
installed ntkfast; generated pages go to ``docs/auto_examples`` and ``docs/api/generated``
(both git-ignored).
"""

import os
import warnings

import ntkfast

project = "ntkfast"
author = "the ntkfast developers"
copyright = "ntkfast developers"
release = ntkfast.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",     # MathJax served from the site itself: works offline
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json"]
templates_path = ["_templates"]
nitpicky = False

# -- API reference: one page per public module, its members from ``__all__`` -------------
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = True
# names exported at the top level are documented once, as ``ntkfast.NAME``; the module
# pages link to them instead of documenting them again (see _templates/autosummary)
autosummary_context = {"toplevel": sorted(set(ntkfast.__all__) - {"__version__"})}
autodoc_default_options = {"members": True, "show-inheritance": False,
                           "member-order": "bysource"}
autodoc_typehints = "none"
autodoc_preserve_defaults = True
add_module_names = False

napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
}
# the build must work offline (CI has no network besides the package registries):
# intersphinx inventories are fetched only when NTKFAST_DOCS_INTERSPHINX=1
if os.environ.get("NTKFAST_DOCS_INTERSPHINX") != "1":
    intersphinx_mapping = {}

# -- gallery ------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": os.path.join("..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "min_reported_time": 1,
}
# matplotlib in the gallery: no display
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")

# -- HTML ---------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"ntkfast {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path = []
html_show_sourcelink = False


# -- docstrings: plain text with Unicode math, made safe for reStructuredText ------------
# The docstrings are written to read well in ``help()``: |x| for absolute values,
# attribute names such as ``X_fit_`` written bare, etc.  reST would read "|x|" as a
# substitution and "name_" as a link target; escape both outside literals, math roles
# and literal blocks, so any docstring renders as written.
import re  # noqa: E402

_LITERAL = re.compile(r"(``.+?``|:[\w:]+:`[^`]*`|`[^`]*`_?)")
_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=[\s,.;:)\]]|$)")


def _escape_plain(text):
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside literals
        parts[i] = _TRAILING_UNDERSCORE.sub(r"\\_", parts[i].replace("|", r"\|"))
    return "".join(parts)


_SECTION = re.compile(r"^(Parameters|Other Parameters|Returns|Yields|Attributes|Raises)$")
_PARAM_SPEC = re.compile(r"^[\w*][\w*,\s.]*(\s:(\s.*)?)?$")


def _end_parameter_sections(lines):
    """numpydoc sections run until the next header, so a free paragraph written after
    a Parameters list (at the list's indentation, after a blank line) would be parsed as
    more parameters; start a Notes section before it instead."""
    out, in_section = [], False
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip() and set(nxt.strip()) == {"-"} and line.strip():
            in_section = bool(_SECTION.match(line.strip()))
        elif (in_section and line.strip() and not line[:1].isspace() and i > 0
              and not lines[i - 1].strip() and not _PARAM_SPEC.match(line.strip())):
            out += ["Notes", "-----"]
            in_section = False
        out.append(line)
    lines[:] = out


def _rst_safe_docstring(app, what, name, obj, options, lines):
    _end_parameter_sections(lines)
    if lines:   # autosummary's first sentence ends at ". ": keep "DATA... " whole
        lines[0] = re.sub(r"(``[^`]*?)\.\.\.(\s[^`]*``)", "\\1…\\2", lines[0])
    literal_indent = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                continue
            literal_indent = None
        if stripped.startswith(">>>"):
            continue
        lines[i] = _escape_plain(line)
        if stripped.endswith("::"):
            literal_indent = indent


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's generated metadata-routing methods (set_fit_request, ...) document
    # scikit-learn, not ntkfast, and link into scikit-learn's own pages
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _rst_safe_docstring, priority=400)
    app.connect("autodoc-skip-member", _skip_member)
