"""Pure-logic tests of scripts/build_book.py and scripts/check_site.py (no notebook execution, no browser)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bb = load_script("build_book")
cs = load_script("check_site")


# ---------------------------------------------------------------------------------------------- build_book


def test_smoke_flag_becomes_papermill_parameter_and_forwarding_keeps_order():
    args = bb.papermill_parameter_args([("profile", "sd21"), ("device", "cuda")], [("seed", "0")],
                                       ["iters: [20, 50]"], smoke=True)
    assert args == ["-p", "smoke", "True", "-p", "profile", "sd21", "-p", "device", "cuda", "-r", "seed", "0",
                    "-y", "iters: [20, 50]"]
    assert bb.parameter_names(args) == ["smoke", "profile", "device", "seed", "iters"]


def test_explicit_smoke_parameter_wins_over_flag():
    args = bb.papermill_parameter_args([("smoke", "False")], [], [], smoke=True)
    assert args == ["-p", "smoke", "False"]
    assert bb.papermill_parameter_args([], [], [], smoke=False) == []


def test_is_smoke():
    assert bb.is_smoke([], True)
    assert bb.is_smoke([("smoke", "True")], False)
    assert not bb.is_smoke([("smoke", "False")], False)
    assert not bb.is_smoke([("profile", "tiny")], False)


def test_select_notebooks_by_name_and_prefix(tmp_path):
    paths = [tmp_path / n for n in ("03_fsm_km.md", "01_motivation.md", "model_card.md", "04_adam.md")]
    assert [p.stem for p in bb.select_notebooks(paths, None)] == ["01_motivation", "03_fsm_km", "04_adam",
                                                                  "model_card"]
    assert [p.stem for p in bb.select_notebooks(paths, ["04", "01_motivation.md"])] == ["01_motivation", "04_adam"]
    assert [p.stem for p in bb.select_notebooks(paths, ["model_card"])] == ["model_card"]
    with pytest.raises(SystemExit, match="matches no notebook"):
        bb.select_notebooks(paths, ["99"])


def test_tag_injected_cell_adds_remove_cell_once():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 1"},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "x = 2"},
        {"cell_type": "code", "metadata": {}, "source": "print(x)"},
    ]}
    assert bb.tag_injected_cell(nb) == 1
    assert bb.tag_injected_cell(nb) == 1  # idempotent
    assert nb["cells"][1]["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert nb["cells"][0]["metadata"]["tags"] == ["parameters"]
    assert nb["cells"][2]["metadata"]["tags"] == []
    assert bb.parameters_cells(nb) == [0]


def test_smoke_banner_goes_below_the_title():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "source": "import x"},
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "text"]},
        {"cell_type": "code", "metadata": {}, "source": "y"},
    ]}
    bb.add_smoke_banner(nb)
    assert nb["cells"][2]["metadata"]["tags"] == ["smoke-banner"]
    assert "Smoke run" in nb["cells"][2]["source"]
    untitled = {"cells": [{"cell_type": "code", "metadata": {}, "source": "y"}]}
    bb.add_smoke_banner(untitled)
    assert untitled["cells"][0]["cell_type"] == "markdown"


def test_slowest_cells_sorted_and_limited():
    cells = [{"cell_type": "code", "metadata": {"papermill": {"duration": d}}, "source": f"\n  step{i}()\n"}
             for i, d in enumerate([0.5, 3.0, None, 1.25])]
    cells.append({"cell_type": "markdown", "metadata": {"papermill": {"duration": 9.0}}, "source": "# md"})
    rows = bb.slowest_cells({"cells": cells}, n=2)
    assert rows == [{"cell": 1, "seconds": 3.0, "source": "step1()"}, {"cell": 3, "seconds": 1.25,
                                                                       "source": "step3()"}]


def test_toc_files_and_missing(tmp_path):
    toc = {"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "A", "chapters": [{"file": "book/reading"}, {"file": "book/chapters/01_x",
                                                                  "sections": [{"file": "book/chapters/01_y"}]}]},
        {"caption": "B", "chapters": [{"file": "book/references.md"}]},
    ]}
    assert bb.toc_files(toc) == ["book/intro", "book/reading", "book/chapters/01_x", "book/chapters/01_y",
                                 "book/references.md"]
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    for f in ("book/intro.md", "book/reading.md", "book/chapters/01_x.ipynb", "book/references.md"):
        (tmp_path / f).write_text("x")
    assert bb.missing_toc_files(tmp_path, toc) == ["book/chapters/01_y"]


def test_repository_toc_lists_every_page_and_chapter():
    yaml = pytest.importorskip("yaml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = bb.toc_files(toc)
    assert files[0] == "book/intro"
    for name in ("01_motivation", "02_cocoercivity", "03_fsm_km", "04_adam_scheduling", "05_watermark", "09_gpu",
                 "model_card", "benchmark"):
        assert f"book/chapters/{name}" in files
    prose = [f for f in files if not f.startswith("book/chapters/")]
    assert bb.missing_toc_files(ROOT, {"root": prose[0], "chapters": [{"file": f} for f in prose[1:]]}) == []


def test_merge_timings_updates_by_notebook():
    old = {"updated": "then", "notebooks": [{"notebook": "a", "seconds": 1.0}, {"notebook": "b", "seconds": 2.0}]}
    merged = bb.merge_timings(old, [{"notebook": "b", "seconds": 5.0}, {"notebook": "c", "seconds": 3.0}],
                              {"updated": "now"})
    assert merged["updated"] == "now"
    assert [(r["notebook"], r["seconds"]) for r in merged["notebooks"]] == [("a", 1.0), ("b", 5.0), ("c", 3.0)]


def test_kernel_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = bb.kernel_env(tmp_path, "/tmp/mpl")
    assert "MPLBACKEND" not in env
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONPATH"].split(":")[:2] == [str(tmp_path), "/elsewhere"]
    assert env["MPLCONFIGDIR"] == "/tmp/mpl"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # an explicit choice is kept (first download of GPU weights)
    assert bb.kernel_env(tmp_path, "/tmp/mpl")["HF_HUB_OFFLINE"] == "0"


def test_to_ipynb_requires_kernelspec_and_parameters_cell(tmp_path):
    pytest.importorskip("jupytext")
    header = "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n" \
             "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# T\n\n"
    good = tmp_path / "good.md"
    good.write_text(header + "```{code-cell} ipython3\n:tags: [parameters]\n\nsmoke = False\n```\n")
    nb = bb.to_ipynb(good, tmp_path / "good.ipynb")
    assert bb.parameters_cells(nb) == [1] and (tmp_path / "good.ipynb").exists()
    untagged = tmp_path / "untagged.md"
    untagged.write_text(header + "```{code-cell} ipython3\nsmoke = False\n```\n")
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        bb.to_ipynb(untagged, tmp_path / "untagged.ipynb")
    nokernel = tmp_path / "nokernel.md"
    nokernel.write_text("# T\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nsmoke = False\n```\n")
    with pytest.raises(ValueError, match="kernelspec"):
        bb.to_ipynb(nokernel, tmp_path / "nokernel.ipynb")


# ---------------------------------------------------------------------------------------------- check_site


def test_normalise_urls():
    assert cs.normalise("http://h/book/intro.html?x=1") == "/book/intro.html"
    assert cs.normalise("http://h/book/") == "/book/index.html"
    assert cs.normalise("http://h/a%20b.html") == "/a b.html"


def test_check_links_reports_missing_anchor_and_page(tmp_path):
    (tmp_path / "a.html").write_text("<html><body id='top'></body></html>")
    server, base = cs.serve(tmp_path)
    try:
        reports = {"a.html": cs.PageReport("a.html")}
        links = {"a.html": [base + "a.html#top", base + "a.html#nope", base + "missing.html",
                            "https://example.org/x", base + "a.html"]}
        ids = {"/a.html": {"top"}}
        n = cs.check_links(reports, links, ids, base)
    finally:
        server.shutdown()
    assert n == 4  # the external link is ignored
    problems = reports["a.html"].problems
    assert len(problems) == 2
    assert any("broken anchor" in p and "nope" in p for p in problems)
    assert any("broken link" in p and "missing.html" in p and "404" in p for p in problems)


def test_redirect_stub_is_recognised():
    html = '<html><head><meta http-equiv="Refresh" content="0; url=book/intro.html" /></head></html>'
    assert cs.REFRESH_RE.search(html).group(1) == "book/intro.html"


def test_mathjax_cdn_path_maps_to_local_copy():
    m = cs.MATHJAX_RE.search("/npm/mathjax@3/es5/output/chtml/fonts/woff-v2/MathJax_Zero.woff")
    assert m.group(1) == "es5/output/chtml/fonts/woff-v2/MathJax_Zero.woff"
    assert cs.MATHJAX_RE.search("/npm/other@3/es5/x.js") is None


def test_cell_error_summary_keeps_the_cell_traceback():
    stderr = "Traceback ...\n  File click/core.py\npapermill.exceptions.PapermillExecutionError: \n" \
             "Exception encountered at \"In [4]\":\nRuntimeError: boom\n"
    assert bb.cell_error_summary(stderr) == 'Exception encountered at "In [4]":\nRuntimeError: boom'
    assert bb.cell_error_summary("a\nb\nc", max_lines=2) == "b\nc"


def test_parameters_note_quotes_injected_values_below_the_hidden_cell():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 'profile = "tiny"'},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
         "source": '# Parameters\nprofile = "sd21"\nsmoke = True\n'},
        {"cell_type": "code", "metadata": {}, "source": "run()"},
    ]}
    assert bb.add_parameters_note(nb)
    note = nb["cells"][2]
    assert note["cell_type"] == "markdown"
    assert '`profile = "sd21"`' in note["source"] and "`smoke = True`" in note["source"]
    assert nb["cells"][3]["source"] == "run()"
    assert not bb.add_parameters_note({"cells": [{"cell_type": "code", "metadata": {}, "source": "x"}]})


# ---------------------------------------------------------------------------------------------- book_chapters


bc = load_script("book_chapters")


def test_parameters_cell_reads_names_defaults_and_comments(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
                  "    format_version: 0.13\nkernelspec:\n  name: python3\n  display_name: Python 3\n"
                  "  language: python\n---\n\n# T\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nn = 4  # images, the paper: 100\n"
                  "grid = [20, 50]\nflag = True  #  spaced\n```\n\n```{code-cell} ipython3\nm = 1  # not a parameter\n```\n")
    assert bc.parameters_cell(md) == [("n", "4", "images, the paper: 100"), ("grid", "[20, 50]", ""),
                                      ("flag", "True", "spaced")]
    empty = tmp_path / "y.md"
    empty.write_text(md.read_text().replace(":tags: [parameters]\n", ""))
    assert bc.parameters_cell(empty) == []


def test_parameters_cell_of_every_chapter_agrees_with_notebook_defaults():
    import ast

    for name in ("01_motivation", "09_gpu", "model_card"):
        cell = {n: ast.literal_eval(v) for n, v, _ in bc.parameters_cell(ROOT / "notebooks" / f"{name}.md")}
        assert cell == bc.notebook_defaults(name), name


def test_hub_needs_and_command_block_name_what_a_profile_loads():
    needs = bc.hub_needs("sd14-video")
    assert {sub for _, sub, _ in needs if sub} == set(bc.HUB_FILES) and needs[-1][1:] == (None, "motion adapter")
    assert all(sub is not None for _, sub, _ in bc.hub_needs("sd21"))  # no adapter
    block = bc.command_block("sd14-video", "# role", ["01_motivation", "05_watermark"], ["01_motivation"])
    lines = block.splitlines()
    assert lines[0] == "# # role" and "make book PROFILE=sd14-video DEVICE=cuda" in block
    assert any(line.startswith(f"hf download {needs[0][0]} --include ") for line in lines)
    assert f"hf download {needs[-1][0]}      # once" in block  # the adapter: the whole repository
    assert "--only 01 -p profile sd14-video" in block
    skipped = [line for line in lines if line.startswith("# skipped:")]
    assert len(skipped) == 1 and "05_watermark" in skipped[0] and "video" in skipped[0]


# ---------------------------------------------------------------------------------------------- book_form


bf = load_script("book_form")
HEAD = "---\njupytext:\n  text_representation:\n    format_name: myst\n---\n\n# T\n\n"


def test_book_form_reads_every_way_a_cell_is_hidden():
    cells = bf.cells(HEAD + "```{code-cell} ipython3\n:tags: [hide-input]\n\na = 1\n```\n\n"
                     "```{code-cell} ipython3\n---\ntags:\n  - remove-input\n---\nb = 2\nc = 3\n```\n\n"
                     "```{code-cell} ipython3\n---\ntags: [remove-cell]\n---\nd = 4\n```\n\n"
                     "```{code-cell} ipython3\n---\nmystnb:\n  remove_code_source: true\n---\ne = 5\n```\n\n"
                     "```{code-cell} ipython3\n:tags: [parameters, hide-input]\n\nf = 6\n```\n\n"
                     "```{code-cell} ipython3\n\ng = 7\n```\n")
    assert [c.hidden for c in cells] == [True, True, True, True, False, False]
    assert [len(c.lines) for c in cells] == [1, 2, 1, 1, 1, 1]


def test_book_form_page_front_matter_hides_all_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(HEAD.replace("---\n\n", "mystnb:\n  remove_code_source: true\n---\n\n", 1)
                    + "```{code-cell} ipython3\nx = 1\ny = 2\n```\n")
    assert bf.form(page)["hidden"] == 2 and bf.form(page)["visible"] == 0


# ---------------------------------------------------------------------------------------------- book_form

CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("0*.md"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_shows_its_code(path):
    """Issue 21's form: at most half of a chapter's code lines hidden (the parameters cell counts as visible), no
    hidden cell over 40 lines, visible code within the rendered code box (80 columns)."""
    form = load_script("book_form").form(path)
    assert form["hidden_share"] <= 0.5, form
    assert form["largest_hidden_cell"] <= 40, form
    assert form["widest_visible_line"] <= 80, form


@pytest.mark.parametrize("name", ["model_card", "benchmark"])
def test_prose_pages_write_no_long_hidden_cells(name):
    """The model card and the benchmark page are Markdown with glued numbers: no hidden cell over 40 lines."""
    assert load_script("book_form").form(ROOT / "notebooks" / f"{name}.md")["largest_hidden_cell"] <= 40


def test_no_heading_is_numbered_by_hand():
    """The toc numbers the chapters' sections; a hand-written "## 1. ..." would render as "3.1. 1. ..."."""
    import re

    numbered = [f"{p.name}: {line}" for p in sorted((ROOT / "notebooks").glob("*.md"))
                for line in p.read_text().splitlines() if re.match(r"#{2,6} +\d+(\.\d+)*\.? ", line)]
    assert not numbered, numbered
