"""Output checks before the work (issue 20, T3): real paths, real permissions (root's override dropped)."""

import subprocess
import sys

import pytest

from structvpr_core.io_utils import OutputError, check_output_dir, check_output_file
from structvpr_core.paths import REPO_ROOT


def test_check_output_file_accepts_new_and_existing_files_and_refuses_dirs_and_files_as_parents(tmp_path):
    assert check_output_file(tmp_path / "report.json") == tmp_path / "report.json"
    assert check_output_file(tmp_path / "new" / "deeper" / "report.json")  # created on write
    (tmp_path / "old.json").write_text("{}")
    check_output_file(tmp_path / "old.json")  # replaced atomically at the end
    with pytest.raises(OutputError, match=f"--out {tmp_path} is a directory: give a file name"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(OutputError, match=f"report {tmp_path}/old.json/r.json: {tmp_path}/old.json is a file"):
        check_output_file(tmp_path / "old.json" / "r.json", "report")
    assert list(tmp_path.iterdir()) == [tmp_path / "old.json"]  # the probes leave nothing behind


def test_check_output_dir_refuses_files_and_existing_dirs_when_asked(tmp_path):
    check_output_dir(tmp_path / "out")
    check_output_dir(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=f"bag {tmp_path}/f is an existing file, not a directory"):
        check_output_dir(tmp_path / "f", "bag")
    with pytest.raises(OutputError, match=f"exists already: remove it or choose another path"):
        check_output_dir(tmp_path, must_not_exist=True)


def test_an_unwritable_parent_is_refused_with_the_reason(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code = ("from structvpr_core.io_utils import check_output_file, check_output_dir\n"
            "for check in (check_output_file, check_output_dir):\n"
            "    try:\n"
            f"        check({str(ro / 'x')!r}, 'out')\n"
            "    except ValueError as e:\n"
            "        print(e)\n")
    try:
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                             preexec_fn=__import__("fault_helpers").without_root_file_override)
    finally:
        ro.chmod(0o755)
    assert run.stdout.splitlines() == [f"out {ro / 'x'}: cannot write in {ro}: Permission denied "
                                       f"(check permissions / read-only filesystem)"] * 2, run.stderr
