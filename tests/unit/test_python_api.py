"""The Python API as a researcher uses it in a notebook: what a cell shows when a call is refused, and which Python
objects the stage functions take."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run_cells(*sources: str, cwd: Path) -> list[nbformat.NotebookNode]:
    """Execute `sources` as the code cells of a notebook in a real Jupyter kernel; the executed cells."""
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    client = NotebookClient(
        book, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return book.cells


def test_a_refused_call_shows_one_line_in_a_notebook_not_a_traceback(tmp_path):
    (cell,) = run_cells("import alignkit\nalignkit.sft(data={'paths': ['chats.jsonl']})", cwd=tmp_path)
    (error,) = [output for output in cell.outputs if output.output_type == "error"]
    assert error.ename == "AlignkitError"
    (line,) = error.traceback  # what Jupyter prints for the error, each entry a line
    assert "chats.jsonl" in line and "fix:" in line and "File " not in line
