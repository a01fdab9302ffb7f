"""decinv.paper: the paper's tables are complete, agree with each other where the paper repeats itself, and are
looked up by data; and no chapter retypes them in its code."""

import re
from pathlib import Path

import pytest

from decinv import paper

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("SD2.1", "LaVie", "InstaFlow")


# ------------------------------------------------------------------------------------------------------ Table S1


def test_every_table_s1_point_has_a_confidence_interval():
    assert set(paper.PAPER_S1_CI) == set(paper.PAPER_S1) == set(MODELS)
    for model in MODELS:
        assert set(paper.PAPER_S1_CI[model]) == set(paper.PAPER_S1[model])
        for key, (points, memory) in paper.PAPER_S1[model].items():
            cis = paper.PAPER_S1_CI[model][key]
            assert sorted(cis) == [k for k, _, _ in points], (model, key)
            assert all(0 < ci < 2 for ci in cis.values()), (model, key)
            assert memory > 0 and all(s > 0 and db < 0 for _, db, s in points)


def test_every_table_s1_setting_is_reachable_by_its_data_keys():
    """Each (method, bits, lr column) of Table S1 is the setting of exactly one entry of S1_SETTING, so a grid row's
    (method, bits, lr, schedule) finds every point of the table."""
    for model in MODELS:
        for method, bits, column in paper.PAPER_S1[model]:
            fields = paper.S1_SETTING[(method, column)]
            assert paper.s1_key(method, bits, **fields) == (method, bits, column)
            assert paper.s1_setting(model, method, bits, **fields)


@pytest.mark.parametrize("model, method, bits, setting, iterations, expected", [
    ("SD2.1", "gradfree-adam", 32, paper.GRADFREE_ADAM, 100, (-21.71, 0.77, 17.7, 3.81)),
    ("SD2.1", "gradfree-adam", 16, paper.GRADFREE_ADAM, 20, (-18.74, 0.48, 1.91, 3.15)),
    ("SD2.1", "gradient-adam", 32, paper.GRADIENT_SCHEDULED, 100, (-24.82, 1.08, 31.7, 8.83)),
    ("SD2.1", "gradient-adam", 32, paper.GRADIENT_FIXED, 50, (-20.93, 0.67, 16.0, 8.83)),
    ("LaVie", "gradfree-adam", 16, paper.GRADFREE_ADAM, 50, (-21.37, 0.55, 21.19, 7.13)),
    ("LaVie", "gradient-adam", 32, paper.GRADIENT_SCHEDULED, 100, (-22.20, 0.81, 122.31, 64.7)),
    ("InstaFlow", "gradient-adam", 32, paper.GRADIENT_FIXED, 30, (-16.40, 0.52, 9.51, 8.38)),
    ("InstaFlow", "gradfree-adam", 32, paper.GRADFREE_ADAM, 200, (-17.81, 0.70, 34.21, 3.2)),
])
def test_s1_point_by_keys(model, method, bits, setting, iterations, expected):
    point = paper.s1_point(model, method, bits, setting["lr"], setting["schedule"], iterations)
    assert tuple(point) == expected
    assert point == paper.s1_point(model, method, bits, iterations=iterations, **setting)


@pytest.mark.parametrize("method, bits, lr, schedule, iterations", [
    ("gradfree-adam", 32, 0.01, "paper", 30),  # the gradient-free grid is 20/50/100/200
    ("gradient-adam", 32, 0.1, "warmup-cosine", 200),  # the gradient-based grid is 20/30/50/100
    ("gradient-adam", 16, 0.1, "warmup-cosine", 20),  # 16-bit gradient-based: unimplementable
    ("gradfree-adam", 32, 0.02, "paper", 20),  # another learning rate
    ("gradfree-adam", 32, 0.01, "warmup-cosine", 20),  # the gradient-based schedule on the gradient-free method
    ("gradfree-adam", 32, 0.01, None, 20),  # a fixed rate: Table S2b, not S1
    ("gradient-adam", 32, 0.1, None, 20),  # 0.1 fixed: not in the paper
    ("gradient-adam", 32, 0.01, "warmup-cosine", 20),  # 0.01 scheduled: not in the paper
    ("anderson", 32, 0.01, "paper", 20),
])
def test_s1_point_is_none_where_the_paper_has_no_point(method, bits, lr, schedule, iterations):
    assert paper.s1_point("SD2.1", method, bits, lr, schedule, iterations) is None


def test_s1_lookup_reads_a_pandas_nan_schedule_as_fixed():
    """A pandas column of schedules holds NaN, not None, for a fixed learning rate (grid.summary rows)."""
    point = paper.s1_point("SD2.1", "gradient-adam", 32, 0.01, float("nan"), 20)
    assert point == paper.s1_point("SD2.1", "gradient-adam", 32, 0.01, None, 20) == (-18.61, 0.49, 6.29, 8.83)
    assert paper.s2b_point(0.002, float("nan"), 50) == (-19.28, 0.53, None, None)


def test_table_s1_nmse_view_is_unchanged():
    s1a = paper.table_s1("SD2.1")
    assert s1a[("gradfree-adam", 32, "0.01 sched")] == {20: -19.39, 50: -20.84, 100: -21.71, 200: -21.85}
    assert s1a[("gradient-adam", 32, "0.1 sched")][100] == -24.82


def test_fig3_memory_bars_agree_with_table_s1_except_instaflow_32_bit():
    for model in MODELS:
        for (method, bits, _), (_, memory) in paper.PAPER_S1[model].items():
            bar = paper.PAPER_FIG3_MEMORY[model][(method, bits)]
            if (model, method, bits) == ("InstaFlow", "gradfree-adam", 32):
                assert (bar, memory) == (3.29, 3.2)  # Fig. 3c's bar against Table S1c's column
            else:
                assert bar == memory, (model, method, bits)


# ------------------------------------------------------------------------------------------------------ Table S2


def test_the_papers_adam_row_is_the_same_in_s1a_s2a_and_s2b():
    """The paper repeats one setting three times: Table S1a's gradient-free 32-bit points, Table S2a's Adam row and
    Table S2b's scheduled row. They agree (value and ±) when S2a's columns are read as 20/50/100/200 iterations."""
    s1a = paper.s1_setting("SD2.1", "gradfree-adam", 32, **paper.GRADFREE_ADAM)
    assert tuple(s1a) == paper.S2A_ITERATIONS == paper.S2B_ITERATIONS
    s2a = paper.s2a_row("gradfree-adam")
    s2b = [paper.s2b_point(iterations=k, **paper.GRADFREE_ADAM) for k in paper.S2B_ITERATIONS]
    for s1, a, b in zip(s1a.values(), s2a, s2b):
        assert (s1.nmse_db, s1.ci) == (a.nmse_db, a.ci) == (b.nmse_db, b.ci)
    assert paper.S2A_PRINTED_ITERATIONS != paper.S2A_ITERATIONS  # the printed header is the odd one out


def test_s2a_rows_by_decinv_method():
    assert [p.text() for p in paper.s2a_row("forward-step")] == ["−16.87 ± 0.38", "−17.42 ± 0.41",
                                                                 "−18.21 ± 0.46", "−19.35 ± 0.54"]
    assert paper.s2a_row("inertial-km")[3] == (-20.91, 1.20, None, None)
    assert paper.s2a_row("anderson") is None
    assert all(len(paper.PAPER_S2A[r]) == len(paper.PAPER_S2A_CI[r]) == 4 for r in paper.PAPER_S2A)


def test_s2b_point_by_keys():
    assert paper.s2b_point(0.01, None, 200) == (-20.61, 0.79, None, None)
    assert paper.s2b_point(0.002, None, 20) == (-17.85, 0.43, None, None)
    assert paper.s2b_point(0.01, "paper", 100).nmse_db == -21.71
    assert paper.s2b_point(0.01, None, 30) is None  # no such column
    assert paper.s2b_point(0.005, None, 50) is None  # no such row
    assert paper.s2b_point(0.002, "paper", 50) is None


def test_as_printed_uses_a_true_minus_sign():
    assert paper.as_printed(-21.71, 0.77) == "\u221221.71 ± 0.77"
    assert paper.as_printed(-20.84) == "\u221220.84"
    assert paper.as_printed(1.2, 0.5, digits=1) == "1.2 ± 0.5"


# ------------------------------------------------------------------------------------------------------ the text


def test_the_papers_headline_numbers_follow_from_its_tables():
    """Sec. 1's contribution bullets, recomputed from Table S1 and Fig. 3."""
    fast = paper.s1_point("InstaFlow", "gradfree-adam", 16, iterations=20, **paper.GRADFREE_ADAM)
    slow = paper.s1_point("InstaFlow", "gradient-adam", 32, iterations=30, **paper.GRADIENT_FIXED)
    assert round(slow.seconds / fast.seconds) == 5  # "up to 5x faster, 1.89 s vs 9.51 s"
    lavie = paper.PAPER_FIG3_MEMORY["LaVie"]
    assert round(100 * (1 - lavie[("gradfree-adam", 16)] / lavie[("gradient-adam", 32)])) == 89  # "up to 89 %"
    free = paper.s1_point("LaVie", "gradfree-adam", 16, iterations=50, **paper.GRADFREE_ADAM)
    grad = paper.s1_point("LaVie", "gradient-adam", 32, iterations=20, **paper.GRADIENT_FIXED)
    assert round(grad.nmse_db - free.nmse_db, 1) == 2.3  # "up to 2.3 dB lower"


def test_fig4_runtimes_are_table_s1a_runtimes():
    for budget in paper.PAPER_FIG4:
        for method, bits, iterations, seconds in budget:
            setting = paper.GRADIENT_SCHEDULED if method == "gradient-adam" else paper.GRADFREE_ADAM
            assert paper.s1_point("SD2.1", method, bits, iterations=iterations, **setting).seconds == seconds


def test_settings_and_estimates():
    assert paper.SEC34["step_size"] == 0.001 and paper.SEC34["alpha"] == 0.9
    assert (paper.GRADFREE_ADAM, paper.GRADIENT_SCHEDULED, paper.GRADIENT_FIXED) == (
        {"lr": 0.01, "schedule": "paper"}, {"lr": 0.1, "schedule": "warmup-cosine"}, {"lr": 0.01, "schedule": None})
    sd = paper.SD21_AUTOENCODER
    assert sd["image_size"] // sd["downsample"] == paper.PAPER_WATERMARK["latent_side"]
    assert paper.SD21_ENCODER_NMSE_ESTIMATE > max(p.nmse_db for p in paper.s2a_row("forward-step"))
    for model, table in paper.PAPER_TABLE2.items():
        assert all(0 < v <= 300 for v in table["accuracy"].values())


# ------------------------------------------------------------------------------------------------------ chapters

CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


def _table_numbers():
    """The paper's table numbers as a chapter would type them, e.g. "21.71", "17.7", "64.7", "-16.0": every NMSE of
    Tables S1/S2a/S2b (two decimals), every S1 runtime (as printed and with two decimals), every peak memory of
    Table S1 and Fig. 3, every runtime and memory of Table 2, the encoder estimate. Numbers with fewer than three
    significant digits (e.g. 3.2) are left out: they are too common to police."""
    numbers = {f"{abs(paper.SD21_ENCODER_NMSE_ESTIMATE):.1f}"}
    for rows in paper.PAPER_S1.values():
        for points, memory in rows.values():
            numbers.add(repr(memory))
            for _, db, seconds in points:
                numbers |= {f"{abs(db):.2f}", repr(seconds), f"{seconds:.2f}"}
    for row in paper.PAPER_S2A.values():
        numbers |= {f"{abs(db):.2f}" for db in row}
    for cells in paper.PAPER_S2B.values():
        numbers |= {f"{abs(db):.2f}" for db, _ in cells}
    for bars in paper.PAPER_FIG3_MEMORY.values():
        numbers |= {repr(gb) for gb in bars.values()}
    for table in paper.PAPER_TABLE2.values():
        numbers |= {repr(v) for col, row in table.items() if col != "accuracy" for v in row.values()}
    return {n for n in numbers if len(n.replace(".", "").lstrip("0")) >= 3}


def test_the_table_numbers_include_what_the_chapters_used_to_type():
    numbers = _table_numbers()
    assert {"19.35", "20.91", "21.85", "21.71", "17.7", "31.7", "8.83", "3.81", "3.15",
            "64.7", "11.7", "7.13", "20.05", "17.85", "16.0", "9.31", "8.53", "9.56"} <= numbers
    assert "3.2" not in numbers


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.md")), ids=lambda p: p.stem)
def test_no_chapter_retypes_the_papers_tables(path):
    """Code cells read the paper's numbers from decinv.paper (prose may quote them). A hit here is a number of
    Tables S1/S2/2 or Fig. 3 typed into a code cell: look it up instead (s1_point, s2a_row, s2b_point, ...)."""
    numbers = _table_numbers()
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, sorted(numbers, key=len, reverse=True)))
                         + r")(?![\w])")
    hits = [f"{path.name}: {number.group()} in {line.strip()!r}"
            for cell in CODE_CELL.findall(path.read_text()) for line in cell.splitlines()
            for number in pattern.finditer(line)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.md")), ids=lambda p: p.stem)
def test_no_chapter_types_the_papers_settings_into_a_call(path):
    """The paper's settings enter code through decinv.paper (GRADFREE_ADAM, SEC34, ...), not as keyword literals:
    e.g. ``Setting("gradfree-adam", k, lr=0.01, schedule="paper")`` or ``lr=0.001``. The parameters cell, whose
    defaults a reader may change, is exempt."""
    typed = re.compile(r"lr=0\.01, schedule=\"paper\"|lr=0\.1, schedule=\"warmup-cosine\"|lr=0\.001\b|alpha=0\.9\b")
    cells = [c for c in CODE_CELL.findall(path.read_text()) if ":tags: [parameters]" not in c]
    hits = [line.strip() for cell in cells for line in cell.splitlines() if typed.search(line)]
    assert not hits, "\n".join(hits)

