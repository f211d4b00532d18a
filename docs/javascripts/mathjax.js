// MathJax 3 for every page of the site, loaded from the site itself
// (javascripts/vendor/mathjax-3.2.2/, brought in by docs/vendor_mathjax.py): nothing comes from a
// network when a page is read.
// Two kinds of element hold math: on the Markdown pages pymdownx.arithmatex wraps each formula in
// an element of class "arithmatex" as \( ... \) or \[ ... \]; on the tutorials' notebook pages the
// Markdown cells (class "jp-MarkdownOutput") keep the notebook's $ ... $ and $$ ... $$. MathJax
// typesets those elements, and the table of contents' links (a heading with a formula keeps it
// there), and nothing else, so a "$" elsewhere on a page stays a dollar sign.
// (Ignoring every class and re-enabling these two would not do: MathJax ignores the children of
// a processed element again when they match the ignore pattern, and a cell's text is in its <p>s.)
const MATH = ".arithmatex, .jp-MarkdownOutput, .md-nav__link";

function typesetMath() {
  return MathJax.startup.promise.then(() => {
    MathJax.typesetClear();
    MathJax.texReset();
    return MathJax.typesetPromise(Array.from(document.querySelectorAll(MATH)));
  });
}

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  startup: {
    typeset: false,                   // not the whole page: the elements above
    ready: () => {
      MathJax.startup.defaultReady();
      typesetMath();
    }
  }
};

// Material's instant navigation swaps page bodies without reloading scripts: typeset each one.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (MathJax.startup && MathJax.startup.promise) {
      typesetMath();
    }
  });
}
