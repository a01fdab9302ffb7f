#!/usr/bin/env python
"""Execute the chapter notebooks with papermill, then build the Jupyter Book.

    python scripts/build_book.py                       # every notebooks/*.md, then jupyter-book build -W -n
    python scripts/build_book.py --smoke               # same, with `-p smoke True` for every notebook (fast)
    python scripts/build_book.py -p profile sd21 -p device cuda --only 03_fsm_km 04 --no-build
    python scripts/build_book.py --profile sd21 --device cuda   # every chapter that runs sd21, then the site
    python scripts/build_book.py --no-execute          # only rebuild the site from book/chapters/*.ipynb

``--profile NAME`` (``make book PROFILE=NAME DEVICE=cuda``) is the one switch for a run on another model: it executes
every selected chapter that declares a ``profile`` parameter and can run NAME (`scripts/book_chapters.py`, CHAPTERS) with
``-p profile NAME -p device DEVICE``, and skips each other chapter with the reason printed (its page from an earlier
run is kept; the site build then fails if a chapter was never executed, so run ``make book`` once first).
``--source`` / ``--generation`` go only to the chapters that declare those parameters (a tiny random pipeline folder
and protocol changes, for trying the switch on a CPU: see tests/tiny_pipelines.py).

For each selected ``notebooks/<name>.md`` (a jupytext MyST notebook with a kernelspec header and one cell tagged
``parameters``): jupytext -> ipynb -> ``papermill -k python3`` with the forwarded parameters -> the executed
notebook is written to ``book/chapters/<name>.ipynb``. Papermill's injected-parameters cell is tagged
``remove-cell`` so the book does not show it; instead a one-line note under the parameters cell says which values
replaced the defaults, and a smoke run gets a warning banner under the page title. Any cell error stops that
notebook, names it, and makes the script exit non-zero without building the site (a stale executed copy of a
failed notebook is deleted, so it cannot slip into the book). Wall times go to ``book/chapters/timings.json`` and
are printed as a table.

Kernel environment: cwd = notebooks/ (as when the source is opened in Jupyter), the repository root on
PYTHONPATH, HF_HUB_OFFLINE=1 and TQDM_DISABLE=1 unless already set, MPLCONFIGDIR a fresh temp dir, MPLBACKEND
removed (so figures are captured inline), tqdm's "IProgress not found" warning silenced.

Lives in scripts/ rather than in the decinv package: it is a build tool that needs jupytext, papermill and
jupyter-book, none of which the library itself should depend on.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # book_chapters.py, the run matrix, sits beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = "notebooks"
CHAPTERS = "book/chapters"
TIMINGS = "timings.json"
INJECTED_TAG = "injected-parameters"
HIDE_TAG = "remove-cell"


# --------------------------------------------------------------------------------------------------------------
# pure helpers (unit-tested in tests/test_book_tools.py)


def select_notebooks(sources: list[Path], only: list[str] | None) -> list[Path]:
    """The sources whose stem equals, or starts with, one of ``only`` (all of them when ``only`` is empty).

    ``--only 03`` selects ``03_fsm_km.md``; every pattern must match at least one notebook.
    """
    sources = sorted(sources, key=lambda p: p.name)
    if not only:
        return sources
    chosen: list[Path] = []
    for pattern in only:
        stem = Path(pattern).stem if pattern.endswith((".md", ".ipynb")) else Path(pattern).name
        hits = [p for p in sources if p.stem == stem] or [p for p in sources if p.stem.startswith(stem)]
        if not hits:
            names = ", ".join(p.stem for p in sources) or "(none)"
            raise SystemExit(f"error: --only {pattern!r} matches no notebook; available: {names}")
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen, key=lambda p: p.name)


def papermill_parameter_args(
    params: list[tuple[str, str]], raw: list[tuple[str, str]], yaml: list[str], smoke: bool
) -> list[str]:
    """papermill CLI arguments for the forwarded parameters (``--smoke`` becomes ``-p smoke True``)."""
    args: list[str] = []
    names = [n for n, _ in params] + [n for n, _ in raw]
    if smoke and "smoke" not in names:
        args += ["-p", "smoke", "True"]
    for name, value in params:
        args += ["-p", name, value]
    for name, value in raw:
        args += ["-r", name, value]
    for text in yaml:
        args += ["-y", text]
    return args


def parameter_names(args: list[str]) -> list[str]:
    """Names of the parameters set by papermill arguments produced by :func:`papermill_parameter_args`."""
    names: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in ("-p", "-r"):
            names.append(args[i + 1])
            i += 3
        elif args[i] == "-y":
            import yaml as _yaml

            loaded = _yaml.safe_load(args[i + 1]) or {}
            names.extend(loaded)
            i += 2
        else:
            i += 1
    return names


def tag_injected_cell(nb: dict) -> int:
    """Add ``remove-cell`` to papermill's injected-parameters cell(s); returns how many cells were tagged."""
    count = 0
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags:
            if HIDE_TAG not in tags:
                tags.append(HIDE_TAG)
            count += 1
    return count


SMOKE_BANNER = (
    ":::{warning}\n"
    "**Smoke run.** This page was executed with `smoke = True`, the smallest settings that run every cell. "
    "It shows that the code works; its numbers and figures are not results.\n"
    ":::"
)


def is_smoke(params: list[tuple[str, str]], smoke_flag: bool) -> bool:
    """Whether this run executes the notebooks in smoke mode (``--smoke`` or ``-p smoke True``)."""
    return smoke_flag or ("smoke", "True") in [tuple(p) for p in params]


def add_smoke_banner(nb: dict) -> None:
    """Insert the smoke-run warning after the cell holding the page title (or first, if there is none)."""
    cells = nb.setdefault("cells", [])
    at = 0
    for i, cell in enumerate(cells):
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        if cell.get("cell_type") == "markdown" and any(line.startswith("# ") for line in src.splitlines()):
            at = i + 1
            break
    banner = {"cell_type": "markdown", "metadata": {"tags": ["smoke-banner"]}, "source": SMOKE_BANNER}
    if "id" in (cells[0] if cells else {}):
        banner["id"] = "smoke-banner"
    cells.insert(at, banner)


def add_parameters_note(nb: dict) -> bool:
    """Below papermill's (hidden) injected cell, say in prose which values replaced the defaults shown above.

    Returns False when there is no injected cell. The note quotes the injected assignments verbatim.
    """
    cells = nb.get("cells", [])
    for i, cell in enumerate(cells):
        if INJECTED_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        assignments = [line.strip() for line in src.splitlines() if line.strip() and not line.startswith("#")]
        if not assignments:
            return False
        values = ", ".join(f"`{a}`" for a in assignments)
        note = {"cell_type": "markdown", "metadata": {"tags": ["papermill-parameters-note"]},
                "source": f":::{{note}}\nThis page was executed with {values}, which replace the defaults "
                          "in the cell above.\n:::"}
        if "id" in cell:
            note["id"] = "papermill-parameters-note"
        cells.insert(i + 1, note)
        return True
    return False


def parameters_cells(nb: dict) -> list[int]:
    """Indices of the cells tagged ``parameters``."""
    return [i for i, c in enumerate(nb.get("cells", [])) if "parameters" in c.get("metadata", {}).get("tags", [])]


def slowest_cells(nb: dict, n: int = 3) -> list[dict]:
    """The ``n`` slowest code cells by papermill's recorded duration: index, seconds, first source line."""
    rows = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if duration is None:
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        first = next((line for line in src.splitlines() if line.strip()), "")
        rows.append({"cell": i, "seconds": round(float(duration), 3), "source": first.strip()[:80]})
    rows.sort(key=lambda r: r["seconds"], reverse=True)
    return rows[:n]


def cell_error_summary(stderr: str, max_lines: int = 30) -> str:
    """The useful part of papermill's stderr: from the cell-error banner on, else the last lines."""
    lines = stderr.strip().splitlines()
    for i, line in enumerate(lines):
        if "PapermillExecutionError" in line:
            return "\n".join(lines[i + 1:][-max_lines:]).strip()
    return "\n".join(lines[-max_lines:])


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml`` (root first), without suffix."""
    out = [toc["root"]] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk({k: v for k, v in toc.items() if k in ("parts", "chapters", "sections")})
    return out


def missing_toc_files(root: Path, toc: dict) -> list[str]:
    """``_toc.yml`` entries with no .md / .ipynb / .rst file under ``root``."""
    missing = []
    for entry in toc_files(toc):
        base = root / entry
        if base.suffix and base.exists():
            continue
        if not any(base.with_suffix(ext).exists() for ext in (".md", ".ipynb", ".rst")):
            missing.append(entry)
    return missing


def merge_timings(old: dict, new_rows: list[dict], meta: dict) -> dict:
    """Update a timings.json document with this run's rows (keyed by notebook name), newest metadata on top."""
    rows = {r["notebook"]: r for r in old.get("notebooks", [])}
    for r in new_rows:
        rows[r["notebook"]] = r
    return {**meta, "notebooks": [rows[k] for k in sorted(rows)]}


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the per-notebook results."""
    head = f"{'notebook':<28} {'status':<7} {'seconds':>9}  slowest cell"
    lines = [head, "-" * len(head)]
    for r in rows:
        slow = r.get("slowest_cells") or []
        slow_txt = f"#{slow[0]['cell']} {slow[0]['seconds']:.1f}s {slow[0]['source']}" if slow else ""
        lines.append(f"{r['notebook']:<28} {r['status']:<7} {r['seconds']:>9.1f}  {slow_txt[:60]}")
    total = sum(r["seconds"] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':<28} {'':<7} {total:>9.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# execution


@dataclass
class Result:
    notebook: str
    status: str
    seconds: float
    output: str | None = None
    error: str | None = None
    slowest: list[dict] = field(default_factory=list)

    def row(self) -> dict:
        row = {"notebook": self.notebook, "status": self.status, "seconds": round(self.seconds, 2),
               "output": self.output, "slowest_cells": self.slowest}
        if self.error:
            row["error"] = self.error
        return row


def kernel_env(root: Path, mpl_dir: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TQDM_DISABLE", "1")  # no progress-bar widgets in the book
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # tqdm.auto warns "IProgress not found" on import when ipywidgets is absent; that stderr would land in the book
    quiet = "ignore:IProgress not found"
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), quiet) if w)
    env["MPLCONFIGDIR"] = mpl_dir
    env.pop("MPLBACKEND", None)  # let ipykernel pick the inline backend, or figures vanish from the book
    return env


def to_ipynb(source: Path, target: Path) -> dict:
    """jupytext source -> ipynb; raises ValueError, saying how to fix it, if the header or the tag is missing."""
    import jupytext
    import nbformat

    nb = jupytext.read(source)
    if not nb.metadata.get("kernelspec"):
        raise ValueError(f"{source} has no kernelspec header; add one with: jupytext --set-kernel python3 {source}")
    if not parameters_cells(nb):
        raise ValueError(
            f"{source} has no cell tagged 'parameters'; papermill would inject its values *above* the notebook's "
            "own assignments, which then silently override them. Tag the cell that assigns the defaults, e.g. "
            "```{code-cell} ipython3\n:tags: [parameters]\n```"
        )
    nbformat.write(nb, target)
    return nb


def declared_parameters(ipynb: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(ipynb)))


def execute(source: Path, out_dir: Path, failed_dir: Path, pm_args: list[str], env: dict, work: Path,
            cell_timeout: int | None, log_output: bool, smoke: bool = False) -> Result:
    import nbformat

    name = source.stem
    final = out_dir / f"{name}.ipynb"
    tmp_in = work / f"{name}.in.ipynb"
    tmp_out = work / f"{name}.ipynb"
    t0 = time.perf_counter()
    try:
        to_ipynb(source, tmp_in)
    except Exception as exc:  # noqa: BLE001 - report any conversion problem against the notebook
        final.unlink(missing_ok=True)
        return Result(name, "FAILED", 0.0, error=f"conversion: {exc}")

    declared = declared_parameters(tmp_in)
    unused = [p for p in parameter_names(pm_args) if p not in declared]
    if unused:
        print(f"  warning: {name}: parameter(s) {', '.join(unused)} not in its parameters cell (injected anyway)")

    cmd = [sys.executable, "-m", "papermill", str(tmp_in), str(tmp_out), "-k", "python3", "--cwd",
           str(source.parent), "--no-progress-bar", *pm_args]
    if log_output:
        cmd.append("--log-output")
    if cell_timeout:
        cmd += ["--execution-timeout", str(cell_timeout)]
    proc = subprocess.run(cmd, env=env, text=True, capture_output=not log_output)
    seconds = time.perf_counter() - t0

    if proc.returncode != 0:
        final.unlink(missing_ok=True)  # never leave a stale chapter behind a failure
        failed_dir.mkdir(parents=True, exist_ok=True)
        kept = None
        if tmp_out.exists():
            kept = failed_dir / f"{name}.ipynb"
            shutil.copyfile(tmp_out, kept)
        msg = cell_error_summary(proc.stderr or "") or f"papermill exited with {proc.returncode}"
        if kept:
            msg += f"\n(partially executed notebook kept at {kept})"
        return Result(name, "FAILED", seconds, error=msg)

    nb = nbformat.read(tmp_out, as_version=4)
    if tag_injected_cell(nb) == 0 and pm_args:
        print(f"  warning: {name}: papermill injected no parameters cell")
    add_parameters_note(nb)
    if smoke:
        add_smoke_banner(nb)
    nb = nbformat.from_dict(nb)
    nbformat.write(nb, tmp_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp_out), final)
    return Result(name, "ok", seconds, output=str(final.relative_to(out_dir.parent.parent)),
                  slowest=slowest_cells(nb))


def build_site(root: Path, env: dict, incremental: bool) -> int:
    exe = Path(sys.executable).with_name("jupyter-book")
    jb = [str(exe)] if exe.exists() else [shutil.which("jupyter-book") or "jupyter-book"]
    cmd = [*jb, "build", str(root), "--builder", "html", "-W", "-n", "--keep-going"]
    if not incremental:
        cmd.append("--all")  # an incremental Sphinx build does not repeat old warnings: -W would miss them
    print("\n$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=root).returncode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="pass `-p smoke True` to every notebook (quick run)")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill parameter for every notebook (typed like papermill: True, 3, 0.5, text)")
    ap.add_argument("-r", "--parameters-raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill raw-string parameter for every notebook")
    ap.add_argument("-y", "--parameters-yaml", action="append", default=[], metavar="YAML",
                    help='papermill YAML parameters, e.g. -y "iterations: [20, 50]"')
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (name or name prefix)")
    ap.add_argument("--no-build", action="store_true", help="execute notebooks, do not build the site")
    ap.add_argument("--no-execute", action="store_true", help="build the site from the existing executed notebooks")
    ap.add_argument("--incremental", action="store_true", help="let Sphinx reuse its cache (default: rebuild all)")
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first failing notebook")
    ap.add_argument("--cell-timeout", type=int, default=3600, help="seconds per cell before papermill gives up")
    ap.add_argument("--log-output", action="store_true", help="stream cell output while executing")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this script's repository)")
    ap.add_argument("--profile", metavar="NAME",
                    help="run every chapter that can run this profile with it (others are skipped, with the reason)")
    ap.add_argument("--device", default=None, help="with --profile: the device passed to the chapters (default cuda)")
    ap.add_argument("--source", default=None, metavar="DIR_OR_REPO",
                    help="with --profile: the pipeline's save_pretrained folder or repo id (chapters declaring source)")
    ap.add_argument("--generation", default=None, metavar="YAML",
                    help='with --profile: protocol changes, e.g. "{steps: 2}" (chapters declaring generation)')
    args = ap.parse_args(argv)
    if args.profile is None and (args.device or args.source or args.generation):
        ap.error("--device, --source and --generation go with --profile (otherwise use -p device cuda etc.)")
    return args


def profile_plan(sources: list[Path], profile: str, root: Path) -> tuple[list[Path], list[tuple[str, str]], dict]:
    """(the sources to execute with ``profile``, [(skipped name, reason)], {name: declared parameter names})."""
    from book_chapters import CHAPTERS, can_run, notebook_defaults

    run, skipped, declared = [], [], {}
    for src in sources:
        names = set(notebook_defaults(src.stem, root)) if src.suffix == ".md" else set()
        declared[src.stem] = names
        if "profile" not in names:
            skipped.append((src.stem, "it takes no profile parameter"))
            continue
        ok, why = can_run(src.stem, profile) if src.stem in CHAPTERS else (True, "")
        if ok:
            run.append(src)
        else:
            skipped.append((src.stem, why))
    return run, skipped, declared


def profile_args(name: str, declared: set, profile: str, device: str, source, generation) -> list[str]:
    """papermill arguments of one chapter in a --profile run: source/generation only where declared."""
    args = ["-p", "profile", profile, "-p", "device", device]
    if source is not None and "source" in declared:
        args += ["-r", "source", str(source)]
    if generation is not None and "generation" in declared:
        args += ["-y", f"generation: {generation}"]
    return args


def print_estimates(names: list[str], profile: str) -> None:
    """The estimated GPU inversion time of each chapter (from the paper's Table S1 timings), where one exists."""
    from book_chapters import PAPER_MODEL, estimate, format_minutes

    if profile not in PAPER_MODEL:
        return
    print(f"estimated inversion time per chapter at its default parameters (from the paper's Table S1 timings on its "
          f"GPU, not a measurement; generation not estimated):")
    for name in names:
        try:
            e = estimate(name, profile)
        except (ValueError, KeyError):
            continue
        print(f"  {name:<22} {format_minutes(e['inversion_s']):>9}  ({e['generation']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    out_dir = root / CHAPTERS
    pm_args = papermill_parameter_args(args.parameters, args.parameters_raw, args.parameters_yaml, args.smoke)
    mpl_dir = tempfile.mkdtemp(prefix="decinv-mpl-")
    env = kernel_env(root, mpl_dir)
    try:
        if not args.no_execute:
            sources = select_notebooks(sorted((root / NOTEBOOKS).glob("*.md")), args.only)
            if not sources:
                print(f"error: no notebooks found in {root / NOTEBOOKS}", file=sys.stderr)
                return 2
            smoke = is_smoke(args.parameters, args.smoke)
            chapter_args = {}
            if args.profile:
                device = args.device or "cuda"
                sources, skipped, declared = profile_plan(sources, args.profile, root)
                for name, why in skipped:
                    print(f"skipped {name}: {why}")
                chapter_args = {s.stem: profile_args(s.stem, declared[s.stem], args.profile, device, args.source,
                                                     args.generation) for s in sources}
                print_estimates([s.stem for s in sources], args.profile)
            print(f"executing {len(sources)} notebook(s) with: {' '.join(pm_args) or '(default parameters)'}"
                  + (f" + -p profile {args.profile} -p device {args.device or 'cuda'}" if args.profile else ""))
            print(f"  HF_HUB_OFFLINE={env['HF_HUB_OFFLINE']}  kernel cwd={root / NOTEBOOKS}  -> {out_dir}")
            results: list[Result] = []
            with tempfile.TemporaryDirectory(prefix="decinv-book-") as work:
                for src in sources:
                    print(f"- {src.stem} ...", flush=True)
                    res = execute(src, out_dir, root / "_build" / "failed-notebooks",
                                  pm_args + chapter_args.get(src.stem, []), env, Path(work),
                                  args.cell_timeout, args.log_output, smoke)
                    print(f"  {res.status} in {res.seconds:.1f} s", flush=True)
                    results.append(res)
                    if res.status != "ok" and args.fail_fast:
                        break
            meta = {
                "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "parameters": pm_args,
                "host": {"platform": platform.platform(), "python": platform.python_version(),
                         "cpu_count": os.cpu_count(), "machine": platform.machine()},
            }
            out_dir.mkdir(parents=True, exist_ok=True)
            tpath = out_dir / TIMINGS
            old = json.loads(tpath.read_text()) if tpath.exists() else {}
            rows = [{**r.row(), "parameters": pm_args + chapter_args.get(r.notebook, [])} for r in results]
            tpath.write_text(json.dumps(merge_timings(old, rows, meta), indent=2) + "\n")
            print("\n" + format_table([r.row() for r in results]))
            print(f"(timings written to {tpath.relative_to(root)})")
            failed = [r for r in results if r.status != "ok"]
            if failed:
                for r in failed:
                    print(f"\nFAILED: notebooks/{r.notebook}.md\n{r.error}", file=sys.stderr)
                print(f"\nerror: {len(failed)} notebook(s) failed: {', '.join(r.notebook for r in failed)}; "
                      "site not built", file=sys.stderr)
                return 1
        if args.no_build:
            return 0
        import yaml

        toc = yaml.safe_load((root / "_toc.yml").read_text())
        missing = missing_toc_files(root, toc)
        if missing:
            for m in missing:
                hint = f" (execute notebooks/{Path(m).name}.md)" if m.startswith(CHAPTERS + "/") else ""
                print(f"error: _toc.yml lists {m}, which does not exist{hint}", file=sys.stderr)
            return 1
        rc = build_site(root, env, args.incremental)
        if rc != 0:
            print(f"error: jupyter-book build failed (exit {rc})", file=sys.stderr)
        else:
            print(f"site built: {root / '_build' / 'html' / 'index.html'}")
        return rc
    finally:
        shutil.rmtree(mpl_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
