"""MkDocs hooks: the tutorials execute in their fast mode when the site is built, a tutorial whose
full run is stored is shown from it, and every page takes its math renderer from the site."""
import os
import re

from mkdocs.structure.files import File

#: nbconvert's template puts a MathJax 2 loader and its configuration into every notebook page;
#: the site's own MathJax 3 (extra_javascript) typesets those pages, so the block is dropped.
NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->",
                               re.S)


def on_config(config):
    os.environ.setdefault("MINIRATTN_FAST", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    return config


def on_files(files, config):
    """tutorials/NN_name.ipynb, a stored full run, is the page (mkdocs.yml's nav names it);
    its source tutorials/NN_name.py is copied beside it as a plain download, not a page."""
    for page in [f for f in files if re.fullmatch(r"tutorials/\d\d_\w+\.ipynb", f.src_uri)]:
        source = files.get_file_from_path(page.src_uri[:-len(".ipynb")] + ".py")
        if source is not None:
            files.remove(source)
            files.append(File(source.src_uri, config["docs_dir"], config["site_dir"], False))
    return files


def on_page_content(html, page, config, files):
    return NBCONVERT_MATHJAX.sub("", html)
