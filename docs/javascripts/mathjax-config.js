// MathJax 3 for pymdownx.arithmatex (generic mode): typeset only the arithmatex spans
// and divs. The SVG output (assets/mathjax/tex-svg.js, vendored at build time) has its
// fonts built in, so equations render offline and from file://.
window.MathJax = {
  loader: { load: ["[tex]/textmacros"] }, // \_ and friends inside \text{...}
  tex: {
    packages: { "[+]": ["textmacros"] },
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: { fontCache: "global" },
};

// Material's instant navigation swaps pages without reloading: typeset each new one.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
