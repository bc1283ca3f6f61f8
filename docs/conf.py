"""Sphinx configuration of nimask's documentation site.

Build (what ``.ci/run`` runs; warnings are errors, internal references are checked)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The API pages under ``reference/api/`` are generated here, at configuration time,
from each module's ``__all__`` (see :func:`_write_api_pages`); they are not in git.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import nimask  # noqa: E402

project = "nimask"
author = "nimask contributors"
copyright = "nimask contributors, Apache-2.0"
version = release = nimask.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_click",
    "myst_nb",  # Markdown pages (MyST) and the notebooks in notebooks/
]

# Pages written by others later (docs/*.md) are picked up by the index's glob toctree;
# _build, the virtual environments and the notebooks' checkpoints are never sources.
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
root_doc = "index"
# Quotes and ellipses only: "--report" in the command's examples must stay two hyphens.
smartquotes_action = "qe"

# Every internal reference must resolve (-n): nitpicky mode, with the types of external
# libraries written in docstrings as plain text (no intersphinx: CI has no network).
nitpicky = True
numpydoc_xref_param_type = False
numpydoc_show_class_members = False  # the generated pages list members themselves
numpydoc_class_members_toctree = False
autodoc_typehints = "none"  # types are in the numpydoc "Parameters" sections
autodoc_member_order = "bysource"
autosummary_generate = False  # the API pages are written by _write_api_pages below

# Objects of other libraries named in docstrings (no intersphinx: CI has no network).  Only
# these are exempt: every reference into nimask must resolve.
EXTERNAL = ["SimpleITK", "numpy", "nibabel", "tqdm", "click", "distributed", "dask", "PIL",
            "concurrent", "multiprocessing", "os", "pathlib", "logging", "csv", "json", "zlib"]
nitpick_ignore_regex = [(r"py:.*", rf"({'|'.join(EXTERNAL)})(\..*)?")]

# MyST: ```{directive} blocks, $...$ not needed; headings get anchors for #links.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: see background/development.md ("The notebooks in the docs").
nb_execution_mode = "cache"
nb_execution_timeout = 240
nb_execution_raise_on_error = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_merge_streams = True

html_theme = "pydata_sphinx_theme"
html_title = f"nimask {release}"
html_static_path = ["_static"]
html_css_files = ["nimask.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": []}


# --------------------------------------------------------------------------------------
# API pages: one page per module, each object documented once.
#
# Every name of ``nimask.__all__`` is documented at ``nimask.<name>`` (the import users
# write); every other public name at the module that defines it.  A package page
# (``nimask.core``, ...) lists what it exports with links to where each is documented.
# --------------------------------------------------------------------------------------

API_DIR = DOCS / "reference" / "api"
#: Modules documented (with their sub-modules); ``nimask.cli`` is documented by
#: sphinx-click on the command-line page, ``nimask.__main__`` only runs it.
API_ROOTS = ["nimask.core", "nimask.io", "nimask.records", "nimask.batch", "nimask.evidence",
             "nimask.data", "nimask.volume", "nimask.exceptions"]


def _modules() -> list[ModuleType]:
    found: list[ModuleType] = []
    for root in API_ROOTS:
        module = importlib.import_module(root)
        found.append(module)
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, root + "."):
                if not info.name.rsplit(".", 1)[-1].startswith("_"):
                    found.append(importlib.import_module(info.name))
    return found


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def _home(module: ModuleType, name: str, modules: list[ModuleType]) -> str:
    """Where ``module.name`` is documented: ``nimask.<name>`` or its defining module."""
    obj = getattr(module, name)
    if name in nimask.__all__ and getattr(nimask, name) is obj:
        return f"nimask.{name}"
    owners = [m for m in modules if not hasattr(m, "__path__") and name in getattr(m, "__all__", ())
              and getattr(m, name) is obj]
    # The module that defines it: a function's or class's own module, else the one that
    # assigns the name (a constant re-exported by another module).
    defined = getattr(obj, "__module__", None) if callable(obj) else None
    for owner in owners:
        if owner.__name__ == defined or (
                defined is None
                and re.search(rf"^{name}\s*[:=]", inspect.getsource(owner), re.MULTILINE)):
            return f"{owner.__name__}.{name}"
    if not owners:
        return f"{module.__name__}.{name}"
    return f"{owners[0].__name__}.{name}"


#: Text added after an object's docstring on its API page.
API_NOTES = {
    "nimask.FileResult": "Its fields are the report's columns: :doc:`/guide/reports-and-flags`.",
}
#: The order of the public API on its page: the functions a user calls first.
TOP_ORDER = ["generate_brain_mask_dataset", "mask_dataset", "brain_mask", "compute_mask",
             "FileResult", "MaskOutcome", "MaskSettings", "find_inputs", "output_name",
             "sample_path", "sample_folder", "sample_brain_mask_path"]


def _members_block(modname: str, names: list[str], module: ModuleType) -> list[str]:
    lines = [".. autosummary::", "   :nosignatures:", ""]
    lines += [f"   {name}" for name in names]
    lines.append("")
    for name in names:
        kind = _kind(getattr(module, name))
        lines += [f".. auto{kind}:: {modname}.{name}", ""]
        if f"{modname}.{name}" in API_NOTES:
            lines += [f"   {API_NOTES[modname + '.' + name]}", ""]
    return lines


def _write_api_pages() -> None:
    modules = _modules()
    API_DIR.mkdir(parents=True, exist_ok=True)
    pages = {}
    for module in modules:
        modname = module.__name__
        public = list(getattr(module, "__all__", ()))
        here = [n for n in public if _home(module, n, modules) == f"{modname}.{n}"]
        elsewhere = [(n, _home(module, n, modules)) for n in public if n not in here]
        title = f"``{modname}``"
        lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
        if elsewhere:
            lines += [".. rubric:: Exported here, documented where shown", ""]
            lines += [f"- :py:obj:`{n} <{target}>` (``{target}``)" for n, target in elsewhere]
            lines.append("")
        if here:
            lines += [".. rubric:: Contents", "", f".. currentmodule:: {modname}", ""]
            lines += _members_block(modname, here, module)
        children = sorted(m.__name__ for m in modules
                          if m.__name__.rsplit(".", 1)[0] == modname)
        if children:
            lines += [".. rubric:: Modules", "", ".. toctree::", "   :maxdepth: 1", ""]
            # the last part of the name in the navigation (the page's title is the full name)
            lines += [f"   {child.rsplit('.', 1)[1]} <{child}>" for child in children]
            lines.append("")
        pages[modname] = "\n".join(lines)
    # nimask itself: the public API, documented in full.
    top = ["``nimask``", "==========", "", ".. automodule:: nimask", "   :no-members:", "",
           "Everything below is importable as ``from nimask import <name>``.", "",
           ".. currentmodule:: nimask", ""]
    public = [n for n in nimask.__all__ if n != "__version__"]
    ordered = [n for n in TOP_ORDER if n in public] + [n for n in public if n not in TOP_ORDER]
    top += _members_block("nimask", ordered, nimask)
    top += [".. data:: nimask.__version__", "", "   The installed version, "
            f"e.g. ``{nimask.__version__!r}``.", ""]
    pages["nimask"] = "\n".join(top)
    wanted = {f"{name}.rst" for name in pages}
    for stale in API_DIR.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in pages.items():
        path = API_DIR / f"{name}.rst"
        if not path.is_file() or path.read_text() != text:  # unchanged pages keep their mtime
            path.write_text(text)


_write_api_pages()


# --------------------------------------------------------------------------------------
# References to a re-exported name.  Docstrings name objects the way code imports them
# (``process_file`` inside ``nimask.batch.cluster``, ``mask_dataset`` inside
# ``nimask.batch``); each object is documented once.  A reference that Sphinx cannot find
# is imported as written and, when it is one of nimask's documented objects, resolved to
# where it is documented.  A name that cannot be imported stays an error.
# --------------------------------------------------------------------------------------

_MISSING = object()


def _import_dotted(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _documented_names() -> dict[int, str]:
    """``id(object) -> documented name`` for nimask's functions and classes."""
    modules = _modules()
    homes: dict[int, str] = {}
    for module in [*modules, nimask]:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                home = _home(module, name, modules)
                homes.setdefault(id(obj), home)
                if home.startswith("nimask.") and home.count(".") == 1:
                    homes[id(obj)] = home  # the top-level name wins
    return homes


_HOMES = _documented_names()


def _resolve_reexport(app, env, node, contnode):  # type: ignore[no-untyped-def]
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    modname = node.get("py:module")
    candidates = [f"{modname}.{target}"] if modname else []
    # A docstring shown at ``nimask.<name>`` names things as seen from its own module.
    where = re.search(r"docstring of ([\w.]+)", node.source or "")
    owner = _import_dotted(where.group(1)) if where else _MISSING
    if getattr(owner, "__module__", None):
        candidates.append(f"{owner.__module__}.{target}")  # type: ignore[union-attr]
    for dotted in [*candidates, target]:
        if not dotted.startswith("nimask"):
            continue
        # A member of a class (``Case.display``, ``MaskSettings.provenance``): its class's entry.
        parent = _import_dotted(dotted.rpartition(".")[0]) if "." in dotted else _MISSING
        if inspect.isclass(parent) and id(parent) in _HOMES and node["reftype"] in (
                "attr", "meth", "obj"):
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, "class", _HOMES[id(parent)], node, contnode)
        obj = _import_dotted(dotted)
        if obj is _MISSING:
            continue
        home = _HOMES.get(id(obj))
        modname_, _, name = dotted.rpartition(".")
        module = sys.modules.get(modname_)
        if home is None and module is not None and name in getattr(module, "__all__", ()):
            home = _home(module, name, _modules())  # a constant, documented where defined
        if home:
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], home, node, contnode)
    return None


# --------------------------------------------------------------------------------------
# "More topics": every page at the top of docs/ other than the index, and every page of a
# folder this index does not know (pages added later need no edit here).  Sphinx warns
# about a glob that matches nothing, so only the patterns that match something are written.
# A page of the known folders belongs in its section's toctree (or says ``orphan: true``).
# --------------------------------------------------------------------------------------

MORE_TOPICS_MARKER = "<!-- more-topics -->"
#: Folders whose pages are in the index's sections.
KNOWN_FOLDERS = {"guide", "examples", "reference", "background", "notebooks"}
SOURCE_SUFFIXES = {".md", ".rst", ".ipynb"}


def _more_topics_patterns() -> list[str]:
    patterns = []
    if any(p.suffix in SOURCE_SUFFIXES and p.stem != "index"
           for p in DOCS.iterdir() if p.is_file()):
        patterns.append("*")
    for folder in sorted(p for p in DOCS.iterdir() if p.is_dir()):
        if folder.name in KNOWN_FOLDERS or folder.name.startswith(("_", ".")):
            continue
        if any(f.suffix in SOURCE_SUFFIXES for f in folder.rglob("*")
               if ".ipynb_checkpoints" not in f.parts):
            patterns.append(f"{folder.name}/**")
    return patterns


def _more_topics(app, docname, source):  # type: ignore[no-untyped-def]
    if docname != "index":
        return
    patterns = _more_topics_patterns()
    toctree = ""
    if patterns:
        toctree = "\n".join(["```{toctree}", ":maxdepth: 1", ":caption: More topics",
                             ":hidden:", ":glob:", "", *patterns, "```"])
    source[0] = source[0].replace(MORE_TOPICS_MARKER, toctree)


# The command's help is plain text for a terminal ("*.nii.gz", "**/*.nrrd"); on the CLI page
# sphinx-click reads it as reStructuredText, where a bare "*" starts emphasis.
_GLOB_STAR = re.compile(r"(?<![\\`])\*(?=[\w.*/{\[])")


def _escape_glob_stars(app, ctx, lines):  # type: ignore[no-untyped-def]
    for i, line in enumerate(lines):
        if not line.lstrip().startswith((".. ", "::")):
            lines[i] = _GLOB_STAR.sub(r"\\*", line)


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_reexport)
    app.connect("source-read", _more_topics)
    for part in ("description", "usage", "options", "arguments", "envvars", "epilog"):
        app.connect(f"sphinx-click-process-{part}", _escape_glob_stars)
