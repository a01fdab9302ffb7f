"""Progress bars: redrawn in place in a terminal or a notebook, a line per LOG_INTERVAL in a log file."""

import io

from decinv.core.progress import LOG_INTERVAL, progress_bar, redrawn_in_place


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_written_to_a_file_refreshes_at_the_log_interval(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    log, terminal = io.StringIO(), _Terminal()
    assert not redrawn_in_place(log) and redrawn_in_place(terminal)
    to_log = progress_bar(range(1000), file=log, desc="run")
    assert to_log.mininterval == LOG_INTERVAL >= 10
    assert sum(1 for _ in to_log) == 1000
    assert log.getvalue().count("\r") <= 3  # start and end, not one redraw per item
    assert progress_bar(range(3), file=terminal).mininterval < 1  # tqdm's default where the bar is redrawn
    assert progress_bar(range(3), file=log, mininterval=2).mininterval == 2  # the caller's choice wins
    monkeypatch.setenv("TQDM_MININTERVAL", "5")  # so does tqdm's own setting
    assert progress_bar(range(3), file=log).mininterval != LOG_INTERVAL


def test_a_hidden_bar_is_disabled_and_a_shown_one_leaves_disable_to_tqdm():
    assert progress_bar(range(3), enabled=False).disable
    shown = progress_bar(range(3), file=io.StringIO())
    assert not shown.disable
    shown.close()
