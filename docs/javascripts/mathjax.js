// MathJax 3 for every page of the site, loaded from the site itself
// (javascripts/vendor/mathjax-3.2.2/, brought in by docs/vendor_mathjax.py): nothing comes from a
// network when a page is read.
// Two kinds of page hold math: the Markdown pages, where pymdownx.arithmatex wraps each formula
// in an element of class "arithmatex" as \( ... \) or \[ ... \]; and the tutorials' notebook
// pages, whose Markdown cells (class "jp-MarkdownOutput") keep the notebook's $ ... $ and
// $$ ... $$. Only those elements are typeset, so a "$" elsewhere on a page stays a dollar sign.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput"
  }
};
// Material's instant navigation swaps page bodies without reloading scripts: typeset each one.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
