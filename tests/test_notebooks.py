"""Every chapter notebook executes in smoke mode (tiny sizes), so a broken chapter fails the test suite fast.

The full-size run happens in `make book` / CI; this only checks that each notebook runs end to end, and that the
GPU estimates' hand model of each estimated chapter (`scripts/book_chapters.workload`) predicts exactly the work the
chapter's smoke run does, as `decinv.core.work` counts it.
"""

import json
from pathlib import Path

import jupytext
import papermill
import pytest

from scripts import book_chapters

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("*.md"))

# An IPython startup file for the kernel that runs an estimated chapter: it opens a work counter before the first cell
# and, after every cell, writes the count so far and the parameters' current values (after the chapter's smoke
# reductions) to a JSON file; after the last cell that file holds the whole run.
COUNTING_STARTUP = """
def _decinv_count_work(path, names):
    import json

    from decinv.core.work import count_work

    counter = count_work()
    work = counter.__enter__()  # open for the kernel's life (dump keeps the counter alive)
    shell = get_ipython()

    def dump(*_, counter=counter):
        values = {name: shell.user_ns.get(name) for name in names}
        record = {"done": dict(work.done), "skipped": dict(work.skipped), "params": values}
        with open(path, "w") as f:
            json.dump(record, f, default=repr)

    shell.events.register("post_run_cell", dump)


_decinv_count_work(PATH, NAMES)
del _decinv_count_work
"""


def count_in_kernel(tmp_path, monkeypatch, chapter):
    """Make the next kernel count its work (an IPython startup file in a fresh IPYTHONDIR); returns the JSON path."""
    record = tmp_path / "work.json"
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    names = sorted(book_chapters.notebook_defaults(chapter))
    (startup / "00-count-work.py").write_text(
        COUNTING_STARTUP.replace("PATH", repr(str(record))).replace("NAMES", repr(names)))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return record


def check_workload(chapter, record):
    """`book_chapters.workload` at the parameters the chapter ran with equals the work counted, kind by kind."""
    counted = {k: record["done"].get(k, 0) + record["skipped"].get(k, 0) for k in record["done"] | record["skipped"]}
    assert set(counted) <= set(book_chapters.WORK_KINDS), f"a kind the estimates do not cost: {counted}"
    expected = book_chapters.workload(chapter, record["params"])
    if chapter == "09_gpu":
        # The setup check times the autoencoder's own decode/encode calls: no solver, operator or diffusion
        # inversion, so nothing is counted; workload models those calls by reading the chapter's code.
        assert counted == {} and expected["free32"] > 0
        return
    assert {k: counted.get(k, 0) for k in book_chapters.WORK_KINDS} == \
        {k: expected[k] for k in book_chapters.WORK_KINDS}, f"{chapter}: counted (left) vs workload (right)"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(source, tmp_path, monkeypatch):
    """Every chapter runs; an estimated chapter also does exactly the work its GPU estimate assumes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    estimated = source.stem in book_chapters.ESTIMATED_CHAPTERS
    record = count_in_kernel(tmp_path, monkeypatch, source.stem) if estimated else None
    notebook = tmp_path / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), notebook)
    papermill.execute_notebook(str(notebook), str(tmp_path / f"{source.stem}.out.ipynb"),
                               parameters={"smoke": True}, kernel_name="python3", cwd=str(source.parent),
                               progress_bar=False)
    if estimated:
        check_workload(source.stem, json.loads(record.read_text()))


def test_watermark_chapter_glues_every_cited_number_on_real_profiles():
    """Chapter 5 runs one protocol (decinv.applications.watermark_pipelines.run_watermark) on every profile: no cell branches on
    the profile, so every cell runs with sd21/sd15 too. Every number the prose cites must be glued by some cell
    (at its top level, or in a loop whose f-string key fits), or `jupyter-book build -W` fails on that site."""
    import re

    text = (ROOT / "notebooks" / "05_watermark.md").read_text()
    code = "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S))
    assert not re.search(r"^\s*(if|elif) (not )?real\b|^real = ", code, re.M), "a cell branches on the profile"
    cited = set(re.findall(r"\{glue:text\}`(\w+)", text))
    glued = set(re.findall(r'^glue\(f?"(\w+)"', code, re.M))
    for template in re.findall(r'^\s+glue\(f"([^"]+)"', code, re.M):  # glued in loops: sens_{tag}{key}
        pattern = re.sub(r"\\\{\w+\\\}", r"\\w*", re.escape(template))
        glued |= {key for key in cited if re.fullmatch(pattern, key)}
    assert cited <= glued, sorted(cited - glued)


def _execute(source, tmp_path, monkeypatch, **parameters):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = tmp_path / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), notebook)
    out = tmp_path / f"{source.stem}.out.ipynb"
    papermill.execute_notebook(str(notebook), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(source.parent), progress_bar=False)
    return out


def test_real_autoencoder_chapter_replays_its_record_without_the_checkpoints(tmp_path, monkeypatch):
    """A fresh clone has no TAEF2 weights: the chapter renders the committed record and says so."""
    monkeypatch.delenv("DECINV_TAESD_DIR", raising=False)
    out = _execute(ROOT / "notebooks" / "08_real_autoencoder.md", tmp_path, monkeypatch)
    text = out.read_text()
    assert "This page shows a recorded run" in text and "results/taef2-cpu.json" in text
    assert "holds" in text and "differs" in text  # the verdict table rendered from the record


def test_chapters_show_solver_sources_that_exist_and_that_they_run():
    """Every `literalinclude ... :pyobject:` of a chapter names an object that exists in that file, and a solver
    shown is one the chapter runs (its METHODS key appears in the chapter's code)."""
    import ast
    import re

    from decinv.core.solvers import METHODS

    by_function = {f.__name__: key for key, f in METHODS.items()}
    for source in SOURCES:
        text = source.read_text()
        shown = re.findall(r"```\{literalinclude\} /(\S+)\n:pyobject: (\S+)", text)
        code = "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S))
        for path, name in shown:
            tree = ast.parse((ROOT / path).read_text())
            scope = tree.body
            for part in name.split("."):
                match = [n for n in scope if getattr(n, "name", None) == part]
                assert match, f"{source.name} shows {name} from {path}, which has no {part}"
                scope = getattr(match[0], "body", [])
            if name in by_function:
                assert f'"{by_function[name]}"' in code, f"{source.name} shows {name} but never runs it"
