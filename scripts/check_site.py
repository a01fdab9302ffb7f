#!/usr/bin/env python
"""Check the built book in a real headless browser.

    python scripts/check_site.py [_build/html] [--mathjax-dir DIR] [--timeout 30] [--screenshots DIR]

Serves the site on 127.0.0.1 (``http.server`` on a free port), opens every HTML page in headless Chromium and
checks that

* the page loads (HTTP 200) and no same-site resource (image, script, stylesheet) fails to load;
* every ``<img>`` has ``naturalWidth > 0`` (lazy images are forced to load first);
* math is rendered: on pages with math, MathJax ran (every Sphinx ``.math`` node holds an ``mjx-container``), no
  MathJax error node is present, and no raw ``$$``, ``\\(``, ``\\[`` or ``\\begin{`` is left in the text;
* every link to the same site resolves: HTTP 200, and for ``#anchor`` links the id exists on the target page
  (ids are read from the live DOM, after MathJax).

Prints a summary and exits 1 if anything failed (2 if the browser cannot be started).

Browser: the system Chromium, driven by Playwright (the ``playwright`` Python package, in the ``book`` extra) through
``chromium.launch(executable_path=...)`` -- Playwright's own browser downloads are not used. Install Chromium with
``scripts/install_browser.sh``. Set ``CHROMIUM=/path/to/chrome`` to use another binary.

MathJax: the site loads MathJax 3 from its CDN. Without network access, pass ``--mathjax-dir`` (the ``mathjax``
npm package directory, the one containing ``es5/``); requests for ``.../mathjax@3/es5/...`` are then answered
from it by a Playwright route, while the HTML stays untouched. ``scripts/install_browser.sh`` installs such a copy
into ``~/.cache/decinv/mathjax`` (used automatically when present; also ``$DECINV_MATHJAX_DIR``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import mimetypes
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:  # the helpers below (links, URLs, serving) work without it; main() says how to install it
    sync_playwright = None

    class PlaywrightError(Exception):
        pass

# Playwright adds its own headless/automation flags; these are the ones this check needs on top
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
]
VIEWPORT = {"width": 1280, "height": 900}
MATHJAX_RE = re.compile(r"/mathjax@[^/]+/(es5/.+)$")
DEFAULT_MATHJAX_DIRS = [
    os.environ.get("DECINV_MATHJAX_DIR", ""),
    str(Path.home() / ".cache" / "decinv" / "mathjax" / "node_modules" / "mathjax"),
]
REFRESH_RE = re.compile(
    r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*content=["']?\s*\d+\s*;\s*url=([^"'>\s]+)""", re.I
)

# Runs in the page after load: force lazy images, wait for images and MathJax, then report what we check.
PAGE_PROBE = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const withTimeout = (p, ms) => Promise.race([p, sleep(ms)]);
  const imgs = [...document.images];
  imgs.forEach(img => { img.loading = 'eager'; });
  await withTimeout(Promise.all(imgs.map(img => img.complete ? null :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }))), %(img_ms)d);
  const mathNodes = [...document.querySelectorAll('.math, span.math, div.math, .amsmath')];
  let mathjax = 'absent';
  if (mathNodes.length) {
    const t0 = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - t0 < %(mj_ms)d) {
      await sleep(100);
    }
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      await withTimeout(MathJax.startup.promise, %(mj_ms)d);
      mathjax = (MathJax.version || 'loaded');
    } else {
      mathjax = 'not loaded';
    }
  }
  // text outside code, with MathJax output and our own markup removed
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container, mjx-assistive-mml, .highlight, ' +
                         '.cell_input, .MathJax_Preview').forEach(n => n.remove());
  const text = clone.textContent || '';
  const raw = [];
  for (const token of ['$$', '\\(', '\\[', '\\begin{']) {
    const i = text.indexOf(token);
    if (i >= 0) raw.push(token + ' ... ' + JSON.stringify(text.slice(Math.max(0, i - 40), i + 60)));
  }
  const unrendered = mathNodes.filter(n => !n.querySelector('mjx-container') && n.closest('mjx-container') === null)
                              .map(n => (n.textContent || '').trim().slice(0, 80));
  const errors = [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
      .map(n => n.getAttribute('data-mjx-error') || n.textContent.slice(0, 80));
  const ids = [...document.querySelectorAll('[id]')].map(n => n.id)
      .concat([...document.querySelectorAll('a[name]')].map(n => n.getAttribute('name')));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {
    url: location.href,
    title: document.title,
    images: imgs.map(img => ({src: img.currentSrc || img.src, w: img.naturalWidth, complete: img.complete})),
    mathNodes: mathNodes.length,
    mjx: document.querySelectorAll('mjx-container').length,
    mathjax, raw, unrendered: unrendered.slice(0, 5), nUnrendered: unrendered.length, errors: errors.slice(0, 5),
    ids, links,
  };
})()
"""


# --------------------------------------------------------------------------------------------------------------
# Chromium through Playwright


class BrowserError(RuntimeError):
    pass


def _content_type(path: Path) -> str:
    if path.suffix == ".js":
        return "application/javascript"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class Browser:
    """The system Chromium, started and driven by Playwright (``chromium.launch(executable_path=...)``): one fresh
    tab per checked page, MathJax CDN requests answered from a local copy when one is given."""

    def __init__(self, binary: str, mathjax_dir: Path | None = None, verbose: bool = False):
        if sync_playwright is None:
            raise BrowserError("the Python package playwright is not installed: pip install -e '.[book]' "
                               "(only the package: the system Chromium is used, no browser download)")
        self.mathjax_dir = mathjax_dir
        if verbose:  # Playwright then prints the browser's own log lines to stderr
            os.environ["DEBUG"] = (os.environ.get("DEBUG", "") + ",pw:browser").lstrip(",")
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=binary, headless=True,
                                                              args=CHROMIUM_FLAGS, timeout=60_000)
            self._context = self._browser.new_context(viewport=VIEWPORT)
            if mathjax_dir:
                self._context.route(re.compile(r"/mathjax@"), self._serve_mathjax)
        except PlaywrightError as exc:
            self._playwright.stop()
            raise BrowserError(str(exc)) from None
        self.version = f"Chromium {self._browser.version}"

    def _serve_mathjax(self, route) -> None:
        """Answer a MathJax CDN request from the local copy; anything else under that pattern goes out as asked."""
        m = MATHJAX_RE.search(urlsplit(route.request.url).path)
        path = (self.mathjax_dir / m.group(1)) if (m and self.mathjax_dir) else None
        if path is not None and path.is_file():
            route.fulfill(status=200, body=path.read_bytes(),
                          headers={"Content-Type": _content_type(path), "Access-Control-Allow-Origin": "*"})
        else:
            route.continue_()

    def new_page(self):
        """A fresh tab whose network failures and uncaught JavaScript errors are recorded in ``page.record``."""
        page = self._context.new_page()
        page.record = record = {"failed": [], "js_errors": []}

        def response(resp) -> None:
            if resp.status >= 400:
                record["failed"].append((resp.url, f"HTTP {resp.status}"))

        def failed(request) -> None:
            why = request.failure or "failed"
            if "ERR_ABORTED" not in why:  # cancelled by the browser (e.g. navigation), not a failure of the site
                record["failed"].append((request.url, why))

        page.on("response", response)
        page.on("requestfailed", failed)
        page.on("pageerror", lambda exc: record["js_errors"].append(getattr(exc, "stack", None) or str(exc)))
        return page

    def load(self, page, url: str, timeout: float) -> dict:
        """Navigate and wait for the load event; returns the document's HTTP status and a navigation error."""
        try:
            response = page.goto(url, wait_until="load", timeout=timeout * 1000)
        except PlaywrightError as exc:
            return {"status": None, "nav_error": str(exc).splitlines()[0]}
        return {"status": response.status if response is not None else None, "nav_error": None}

    def evaluate(self, page, expression: str):
        try:
            return page.evaluate(expression)
        except PlaywrightError as exc:
            raise BrowserError(f"page script failed: {str(exc).splitlines()[0]}") from None

    def screenshot(self, page, path: Path, max_height: int = 6000) -> None:
        """Save a full-page PNG (height capped at ``max_height`` CSS pixels)."""
        width, height = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True, timeout=60_000,
                        clip={"x": 0, "y": 0, "width": width, "height": min(height, max_height)})

    def close(self) -> None:
        try:
            self._browser.close()
        finally:
            self._playwright.stop()


def find_chromium() -> str | None:
    """$CHROMIUM, else Debian's real binary (skipping the /usr/bin/chromium wrapper and the extra flags it adds
    from /etc/chromium.d), else the first Chromium/Chrome on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    if os.access("/usr/lib/chromium/chromium", os.X_OK):
        return "/usr/lib/chromium/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# --------------------------------------------------------------------------------------------------------------
# server and checks


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D401 - silence per-request logging
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # the browser cancels requests when it moves on (BrokenPipe/ConnectionReset): not a site problem
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = QuietServer(("127.0.0.1", 0), handler)  # port 0: the OS picks a free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@dataclass
class PageReport:
    path: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: int = 0
    math: int = 0
    links: int = 0


def html_pages(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.html") if "_static" not in p.relative_to(root).parts)


def page_url(base: str, root: Path, page: Path) -> str:
    return urljoin(base, page.relative_to(root).as_posix())


def normalise(url: str) -> str:
    """A same-site URL without fragment and query, percent-decoded, with directory URLs ending in index.html."""
    path = unquote(urlsplit(url).path)
    if path.endswith("/"):
        path += "index.html"
    return path


def check_links(reports: dict[str, PageReport], links: dict[str, list[str]], ids: dict[str, set[str]],
                base: str) -> int:
    """Resolve every same-site link collected from the pages; returns the number of distinct links checked."""
    status_cache: dict[str, int] = {}
    host = urlsplit(base).netloc
    checked = set()
    for page_path, hrefs in links.items():
        for href in hrefs:
            parts = urlsplit(href)
            if parts.scheme not in ("http", "https") or parts.netloc != host:
                continue
            target, frag = urldefrag(href)
            key = normalise(target)
            checked.add((key, frag))
            if key not in status_cache:
                status_cache[key] = http_status(urljoin(base, key.lstrip("/")))
            if status_cache[key] != 200:
                reports[page_path].problems.append(f"broken link {href} (HTTP {status_cache[key] or 'error'})")
                continue
            frag = unquote(frag)
            if frag and key.endswith(".html"):
                if key not in ids:
                    reports[page_path].warnings.append(f"cannot verify #{frag} on {key} (page not checked)")
                elif frag not in ids[key]:
                    reports[page_path].problems.append(f"broken anchor {href} (no id {frag!r} on {key})")
    return len(checked)


def check_page(browser: Browser, page, base: str, url: str, rel: str, timeout: float,
               report: PageReport) -> dict | None:
    info = browser.load(page, url, timeout)
    if info["nav_error"]:
        report.problems.append(f"page did not load: {info['nav_error']}")
        return None
    if info["status"] != 200:
        report.problems.append(f"page HTTP status {info['status']}")
    probe = browser.evaluate(page, PAGE_PROBE % {"img_ms": int(timeout * 1000), "mj_ms": int(timeout * 1000)})
    host = urlsplit(base).netloc
    for failed_url, why in page.record["failed"]:
        if urlsplit(failed_url).path == "/favicon.ico":  # requested by the browser itself, not by the page
            continue
        if urlsplit(failed_url).netloc == host:
            report.problems.append(f"resource failed: {failed_url} ({why})")
        else:
            report.warnings.append(f"external resource failed: {failed_url} ({why})")
    for err in page.record["js_errors"]:
        report.warnings.append(f"JavaScript error: {str(err).splitlines()[0][:160]}")
    report.images = len(probe["images"])
    for img in probe["images"]:
        if not img["w"]:
            report.problems.append(f"image not rendered (naturalWidth 0): {img['src']}")
    report.math = probe["mathNodes"]
    if probe["mathNodes"]:
        if probe["mathjax"] == "not loaded":
            report.problems.append(f"{probe['mathNodes']} math node(s) but MathJax did not load "
                                   "(offline? use --mathjax-dir, see scripts/install_browser.sh)")
        elif probe["mjx"] == 0:
            report.problems.append(f"{probe['mathNodes']} math node(s) but no mjx-container: MathJax did not render")
        if probe["nUnrendered"]:
            report.problems.append(f"{probe['nUnrendered']} math node(s) not rendered, e.g. {probe['unrendered']}")
    for err in probe["errors"]:
        report.problems.append(f"MathJax error: {err}")
    for raw in probe["raw"]:
        report.problems.append(f"raw TeX delimiter in text: {raw}")
    report.links = len(probe["links"])
    return probe


def find_mathjax_dir(arg: str | None) -> Path | None:
    for cand in ([arg] if arg else DEFAULT_MATHJAX_DIRS):
        if cand and (Path(cand) / "es5" / "tex-mml-chtml.js").is_file():
            return Path(cand)
    if arg:
        raise SystemExit(f"error: --mathjax-dir {arg} has no es5/tex-mml-chtml.js")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", nargs="?", default="_build/html", type=Path, help="built HTML folder")
    ap.add_argument("--mathjax-dir", help="local MathJax 3 package dir (containing es5/) to use instead of the CDN")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a page, its images, MathJax")
    ap.add_argument("--verbose", action="store_true", help="show Chromium's stderr and every page's result")
    ap.add_argument("--screenshots", type=Path, metavar="DIR", help="also save a full-page PNG of every page here")
    args = ap.parse_args(argv)

    root = args.site.resolve()
    if not (root / "index.html").is_file():
        print(f"error: {root} has no index.html; build the book first (make book)", file=sys.stderr)
        return 2
    binary = find_chromium()
    if not binary:
        print("error: no Chromium found; run scripts/install_browser.sh (or set CHROMIUM=...)", file=sys.stderr)
        return 2
    mathjax_dir = find_mathjax_dir(args.mathjax_dir)

    server, base = serve(root)
    t0 = time.perf_counter()
    reports: dict[str, PageReport] = {}
    links: dict[str, list[str]] = {}
    ids: dict[str, set[str]] = {}
    try:
        browser = Browser(binary, mathjax_dir, verbose=args.verbose)
    except Exception as exc:  # noqa: BLE001
        server.shutdown()
        print(f"error: could not start {binary}: {exc}", file=sys.stderr)
        return 2
    print(f"checking {root} at {base} with {browser.version}"
          + (f" (MathJax from {mathjax_dir})" if mathjax_dir else " (MathJax from its CDN)"))
    try:
        for page_file in html_pages(root):
            rel = page_file.relative_to(root).as_posix()
            report = reports[rel] = PageReport(rel)
            refresh = REFRESH_RE.search(page_file.read_text(errors="replace")[:4000])
            if refresh:  # redirect stub (e.g. index.html): only its target has to exist
                links[rel] = [urljoin(page_url(base, root, page_file), refresh.group(1))]
                continue
            page = browser.new_page()
            try:
                probe = check_page(browser, page, base, page_url(base, root, page_file), rel, args.timeout, report)
                if probe is not None and args.screenshots:
                    browser.screenshot(page, args.screenshots / (rel.replace("/", "__") + ".png"))
            except (BrowserError, PlaywrightError) as exc:
                report.problems.append(f"browser error: {str(exc).splitlines()[0]}")
                continue
            finally:
                page.close()
            if probe is not None:
                links[rel] = probe["links"]
                ids[normalise(page_url(base, root, page_file))] = set(probe["ids"])
            if args.verbose:
                print(f"  {rel}: {report.images} img, {report.math} math, {report.links} links, "
                      f"{len(report.problems)} problem(s)")
        n_links = check_links(reports, links, ids, base)
    finally:
        browser.close()
        server.shutdown()

    bad = {k: r for k, r in reports.items() if r.problems}
    warned: dict[str, list[str]] = {}
    for rel, r in sorted(reports.items()):
        for w in dict.fromkeys(r.warnings):
            warned.setdefault(w, []).append(rel)
    for w, pages in warned.items():
        where = pages[0] if len(pages) == 1 else f"{len(pages)} pages ({pages[0]}, ...)"
        print(f"warning: {where}: {w}")
    for rel, r in sorted(bad.items()):
        for p in dict.fromkeys(r.problems):
            print(f"FAIL: {rel}: {p}")
    n_img = sum(r.images for r in reports.values())
    n_math = sum(1 for r in reports.values() if r.math)
    print(f"\n{len(reports)} pages, {n_img} images, {n_math} pages with math, {n_links} distinct internal links "
          f"checked in {time.perf_counter() - t0:.1f} s: "
          + ("all OK" if not bad else f"{sum(len(set(r.problems)) for r in bad.values())} problem(s) "
             f"on {len(bad)} page(s)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
