"""Every chapter notebook executes in smoke mode (tiny sizes), so a broken chapter fails the test suite fast.

The full-size run happens in `make book` / CI; this only checks that each notebook runs end to end.
"""

from pathlib import Path

import jupytext
import papermill
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("*.md"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = tmp_path / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), notebook)
    papermill.execute_notebook(str(notebook), str(tmp_path / f"{source.stem}.out.ipynb"),
                               parameters={"smoke": True}, kernel_name="python3", cwd=str(source.parent),
                               progress_bar=False)
