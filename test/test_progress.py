"""Progress: a tqdm bar on a terminal, plain periodic lines otherwise."""

import io
import os

from tqdm import tqdm

from structvpr_core.progress import LogLines, progress


def test_not_a_terminal_gives_periodic_lines_and_a_closing_line():
    out = io.StringIO()
    items = list(progress(range(5), desc="replaying", unit="img", interval_s=0.0, stream=out))
    assert items == [0, 1, 2, 3, 4]
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and "\r" not in out.getvalue()
    assert lines[0].startswith("replaying: 1/5 img (20.0%), ") and lines[-1].startswith("replaying: done 5/5 img (100.0%)")

    quiet = io.StringIO()
    with progress(total=1000, desc="building map", unit="img", stream=quiet) as bar:  # default interval: 10 s
        for _ in range(1000):
            bar.update()
        bar.set_postfix({"loss": "0.1"})
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[0]]  # only the closing line
    assert quiet.getvalue().startswith("building map: done 1000/1000 img (100.0%)") and "loss 0.1" in quiet.getvalue()

    silent = io.StringIO()
    list(progress(range(3), disable=True, stream=silent))
    assert silent.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar():
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as tty:
            bar = progress(range(3), desc="x", stream=tty)
            assert isinstance(bar, tqdm) and not isinstance(bar, LogLines)
            assert list(bar) == [0, 1, 2]
    finally:
        os.close(leader)
