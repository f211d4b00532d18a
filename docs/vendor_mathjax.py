"""Bring the site's math renderer into the repository: MathJax from the npm registry, pinned.

    python docs/vendor_mathjax.py

Runs ``npm pack mathjax@VERSION``, refuses the tarball unless its integrity is the pinned one,
and copies what the site loads (the TeX-to-HTML component, its fonts and the licence) into
docs/javascripts/vendor/mathjax-VERSION/ with a MANIFEST of SHA-256 sums that the tests check.
The files are committed, so building the site needs neither npm nor a network, and the pages
load nothing from elsewhere (docs/testing.md, "The docs site as a reader sees it").
"""
import base64
import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

VERSION = "3.2.2"
INTEGRITY = ("sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1"
             "vO+geW0OhGw==")
#: What the pages load: the combined component (TeX input, HTML output, menu, assistive MathML)
#: and the web fonts it fetches from [mathjax]/output/chtml/fonts/woff-v2.
KEEP = ("LICENSE", "es5/tex-chtml.js", "es5/output/chtml/fonts/woff-v2/")
OUT = pathlib.Path(__file__).resolve().parent / "javascripts" / "vendor" / f"mathjax-{VERSION}"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        info = json.loads(subprocess.run(["npm", "pack", f"mathjax@{VERSION}", "--json"], cwd=tmp,
                                         check=True, capture_output=True, text=True).stdout)[0]
        tarball = pathlib.Path(tmp) / info["filename"]
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != INTEGRITY:
            sys.exit(f"mathjax@{VERSION}: integrity {digest}, expected {INTEGRITY}")
        shutil.rmtree(OUT, ignore_errors=True)
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("package/")
                if member.isfile() and any(name == k or (k.endswith("/") and name.startswith(k))
                                           for k in KEEP):
                    target = OUT / name.removeprefix("es5/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
    files = sorted(p for p in OUT.rglob("*") if p.is_file())
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(OUT)}" for p in files]
    (OUT / "MANIFEST").write_text(f"# mathjax@{VERSION} from the npm registry, {INTEGRITY}\n"
                                  + "\n".join(lines) + "\n")
    print(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
