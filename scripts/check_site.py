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

Browser: Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``), standard library only -- no
selenium, no chromedriver. Install it with ``scripts/install_browser.sh``. Set ``CHROMIUM=/path/to/chrome`` to
use another binary.

MathJax: the site loads MathJax 3 from its CDN. Without network access, pass ``--mathjax-dir`` (the ``mathjax``
npm package directory, the one containing ``es5/``); requests for ``.../mathjax@3/es5/...`` are then answered
from it inside the browser, while the HTML stays untouched. ``scripts/install_browser.sh`` installs such a copy
into ``~/.cache/decinv/mathjax`` (used automatically when present; also ``$DECINV_MATHJAX_DIR``).
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import mimetypes
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-pipe",
]
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
# Chromium over the DevTools pipe


class CDPError(RuntimeError):
    pass


def _high_fd(fd: int, minimum: int = 10) -> int:
    """Duplicate ``fd`` to a number >= ``minimum`` and close the original."""
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return new


class Browser:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, mathjax_dir: Path | None = None, verbose: bool = False):
        self.mathjax_dir = mathjax_dir
        self.verbose = verbose
        self.profile = tempfile.mkdtemp(prefix="decinv-chromium-")
        to_browser_r, self._to_browser_w = os.pipe()
        self._from_browser_r, from_browser_w = os.pipe()
        # move the child's ends above 9 so that the fd 3/4 redirections below cannot clobber them
        to_browser_r, from_browser_w = (_high_fd(to_browser_r), _high_fd(from_browser_w))
        # bash maps our pipe ends onto fds 3/4 (what --remote-debugging-pipe expects), then execs the browser
        # (bash, not sh: dash cannot redirect file descriptors above 9)
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.log_path = Path(self.profile) / "chromium-stderr.log"
        self._log = None if verbose else open(self.log_path, "wb")  # a file, not a pipe: it can never fill up
        self.proc = subprocess.Popen(
            ["bash", "-c", script, binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._pending: dict[int, queue.Queue] = {}
        self._events: dict[str | None, queue.Queue] = {}
        self._nav: dict[str, dict] = {}
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self.version = self.call("Browser.getVersion", timeout=60)["product"]
        except (CDPError, OSError) as exc:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            self.close()
            raise CDPError(f"{exc}\n{tail}".strip()) from None

    # transport
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        if self._closed.is_set():
            raise CDPError(f"{method}: the browser has exited (code {self.proc.poll()})")
        with self._lock:
            self._next_id += 1
            msg_id = self._next_id
            self._pending[msg_id] = queue.Queue(maxsize=1)
            msg = {"id": msg_id, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            data = memoryview(json.dumps(msg).encode() + b"\0")
            while data:  # large messages (MathJax fonts) may need several writes
                data = data[os.write(self._to_browser_w, data):]
        return msg_id

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        msg_id = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    reply = self._pending[msg_id].get(timeout=0.2)
                    break
                except queue.Empty:
                    if self._closed.is_set():
                        raise CDPError(f"{method}: the browser exited (code {self.proc.poll()})") from None
                    if time.monotonic() > deadline:
                        raise CDPError(f"{method}: no reply within {timeout} s") from None
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def events(self, session: str | None) -> queue.Queue:
        return self._events.setdefault(session, queue.Queue())

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser_r, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if "id" in msg:
                    q = self._pending.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                elif msg.get("method") == "Fetch.requestPaused":
                    self._serve_mathjax(msg["params"], msg.get("sessionId"))
                else:
                    self.events(msg.get("sessionId")).put(msg)
        self._closed.set()

    def _serve_mathjax(self, params: dict, session: str | None) -> None:
        """Answer a paused MathJax CDN request from the local copy (called on the reader thread: no waiting)."""
        url = params["request"]["url"]
        m = MATHJAX_RE.search(urlsplit(url).path)
        path = (self.mathjax_dir / m.group(1)) if (m and self.mathjax_dir) else None
        if path is not None and path.is_file():
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if path.suffix == ".js":
                ctype = "application/javascript"
            self._send("Fetch.fulfillRequest", {
                "requestId": params["requestId"], "responseCode": 200,
                "responseHeaders": [{"name": "Content-Type", "value": ctype},
                                    {"name": "Access-Control-Allow-Origin", "value": "*"}],
                "body": base64.b64encode(path.read_bytes()).decode(),
            }, session)
        else:
            self._send("Fetch.continueRequest", {"requestId": params["requestId"]}, session)

    # pages
    def new_page(self) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(method, session=session)
        if self.mathjax_dir:
            self.call("Fetch.enable", {"patterns": [{"urlPattern": "*mathjax@*", "requestStage": "Request"}]},
                      session=session)
        return session

    def load(self, session: str, url: str, timeout: float) -> dict:
        """Navigate and wait for the load event; returns document status and failed/JS-error records."""
        q = self.events(session)
        while not q.empty():
            q.get_nowait()
        reply = self.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
        info = {"status": None, "failed": [], "js_errors": [], "nav_error": reply.get("errorText")}
        if info["nav_error"]:
            return info
        # only network events of this navigation count (late events of the previous page are dropped)
        self._nav[session] = {"loader": reply.get("loaderId"), "frame": reply.get("frameId"), "requests": {}}
        deadline = time.monotonic() + timeout
        loaded = False
        while time.monotonic() < deadline:
            try:
                ev = q.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if ev.get("method") == "Page.loadEventFired":
                loaded = True
                break
            self._record(session, ev, info)
        if not loaded:
            info["nav_error"] = f"no load event within {timeout} s"
        return info

    def _record(self, session: str, ev: dict, info: dict) -> None:
        nav = self._nav.get(session, {})
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Network.requestWillBeSent":
            if p.get("loaderId") == nav.get("loader"):
                nav["requests"][p["requestId"]] = p["request"]["url"]
        elif method == "Network.responseReceived":
            if p["requestId"] not in nav.get("requests", {}):
                return
            resp = p["response"]
            if p.get("type") == "Document" and p.get("frameId") == nav.get("frame") and info.get("status") is None:
                info["status"] = resp.get("status")
            if resp.get("status", 200) >= 400:
                info["failed"].append((resp["url"], f"HTTP {resp['status']}"))
        elif method == "Network.loadingFailed":
            url = nav.get("requests", {}).get(p["requestId"])
            if url is not None and not p.get("canceled"):
                info["failed"].append((url, p.get("errorText", "failed")))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            info["js_errors"].append((d.get("exception", {}) or {}).get("description") or d.get("text"))

    def evaluate(self, session: str, expression: str, timeout: float):
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, session=session, timeout=timeout)
        if "exceptionDetails" in res:
            raise CDPError(f"page script failed: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def screenshot(self, session: str, path: Path, max_height: int = 6000) -> None:
        """Save a full-page PNG (height capped at ``max_height`` CSS pixels)."""
        size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                         session=session, timeout=60)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def drain(self, session: str) -> dict:
        """Failures and JS errors that arrived after the load event (e.g. MathJax fonts, lazy images)."""
        info = {"status": 200, "failed": [], "js_errors": []}
        q = self.events(session)
        while True:
            try:
                self._record(session, q.get_nowait(), info)
            except queue.Empty:
                break
        return info

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        finally:
            try:
                os.close(self._to_browser_w)
            except OSError:
                pass
            if self._log is not None:
                self._log.close()
            shutil.rmtree(self.profile, ignore_errors=True)


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


def check_page(browser: Browser, session: str, base: str, url: str, rel: str, timeout: float,
               report: PageReport) -> dict | None:
    info = browser.load(session, url, timeout)
    if info["nav_error"]:
        report.problems.append(f"page did not load: {info['nav_error']}")
        return None
    if info["status"] != 200:
        report.problems.append(f"page HTTP status {info['status']}")
    probe = browser.evaluate(session, PAGE_PROBE % {"img_ms": int(timeout * 1000), "mj_ms": int(timeout * 1000)},
                             timeout=3 * timeout + 5)
    late = browser.drain(session)
    host = urlsplit(base).netloc
    for failed_url, why in info["failed"] + late["failed"]:
        if urlsplit(failed_url).path == "/favicon.ico":  # requested by the browser itself, not by the page
            continue
        if urlsplit(failed_url).netloc == host:
            report.problems.append(f"resource failed: {failed_url} ({why})")
        else:
            report.warnings.append(f"external resource failed: {failed_url} ({why})")
    for err in info["js_errors"] + late["js_errors"]:
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
        session = browser.new_page()
        for page in html_pages(root):
            rel = page.relative_to(root).as_posix()
            report = reports[rel] = PageReport(rel)
            refresh = REFRESH_RE.search(page.read_text(errors="replace")[:4000])
            if refresh:  # redirect stub (e.g. index.html): only its target has to exist
                links[rel] = [urljoin(page_url(base, root, page), refresh.group(1))]
                continue
            try:
                probe = check_page(browser, session, base, page_url(base, root, page), rel, args.timeout, report)
            except CDPError as exc:
                report.problems.append(f"browser error: {exc}")
                session = browser.new_page()
                continue
            if probe is not None and args.screenshots:
                browser.screenshot(session, args.screenshots / (rel.replace("/", "__") + ".png"))
            if probe is not None:
                links[rel] = probe["links"]
                ids[normalise(page_url(base, root, page))] = set(probe["ids"])
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
