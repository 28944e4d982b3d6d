"""The README as a user meets it: every Python snippet runs as written, and the test set-up it
describes (PYCONV_DATA for the data sets, PYCONV_REQUIRE_ALL in CI) does what it says."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from conftest import REPO, offline_env, run_python

README = REPO / "README.md"
# A ```python block, unless the line before it is <!-- no-test --> (for code that cannot run
# here, e.g. one needing a file the reader brings; keep these rare).
BLOCK = re.compile(r"^(<!-- no-test -->\n)?```python\n(.*?)^```", re.S | re.M)


def readme_snippets():
    text = README.read_text(encoding="utf-8")
    return [
        pytest.param(m.group(2), id=f"README.md:{text.count(chr(10), 0, m.start(2)) + 1}")
        for m in BLOCK.finditer(text)
        if not m.group(1)
    ]


SNIPPETS = readme_snippets()


def test_the_snippets_are_found():
    assert len(SNIPPETS) >= 5  # the extraction pattern still matches the README's blocks


@pytest.mark.parametrize("code", SNIPPETS)
def test_readme_snippet_runs_as_written(code, tmp_path, trained_folder):
    """Each block alone, in a fresh interpreter and an empty folder holding what the README's
    first command (`pyconv train`) leaves there."""
    shutil.copy(trained_folder / "mnist_cnn.pyconv", tmp_path)  # a copy: snippets save over it
    (tmp_path / "snippet.py").write_text(code, encoding="utf-8")
    env = offline_env(tmp_path)
    done = run_python(["snippet.py"], tmp_path, timeout=180, env=env)
    assert done.returncode == 0, f"the snippet fails:\n{code}\n{done.stdout}\n{done.stderr}"


# --- the test set-up: PYCONV_DATA and PYCONV_REQUIRE_ALL --------------------------------------

PROBE_TESTS = """
import pytest
from conftest import data_dir

def test_data_dir():
    print("DATA", data_dir("mnist"))

def test_platform_skip():
    pytest.skip("needs /proc/self/statm (Linux)")

def test_missing_dependency():
    pytest.importorskip("no_such_module_for_pyconv_tests")
"""


def run_probe(tmp_path, **env):
    """pytest, with the suite's conftest, on tests that look up the data and skip."""
    folder = tmp_path / "probe"
    folder.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", folder)
    (folder / "test_probe.py").write_text(PROBE_TESTS)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYCONV_")}
    args = ["-m", "pytest", "-q", "-rs", "-s", "-p", "no:cacheprovider", "test_probe.py"]
    return run_python(args, folder, env={**environ, **env})


def test_data_dir_honours_pyconv_data_and_names_it_when_absent(tmp_path):
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    found = run_probe(tmp_path, PYCONV_DATA=str(tmp_path / "data"))
    assert f"DATA {tmp_path / 'data' / 'mnist'}" in found.stdout, found.stdout
    shutil.rmtree(tmp_path / "probe")
    absent = run_probe(tmp_path, PYCONV_DATA=str(tmp_path / "nowhere"))
    assert "mnist not found: set PYCONV_DATA" in absent.stdout, absent.stdout
    assert absent.returncode == 0  # a skip, not a failure, outside CI


def test_require_all_fails_the_run_on_an_unexpected_skip(tmp_path):
    done = run_probe(tmp_path, PYCONV_DATA=str(tmp_path / "nowhere"), PYCONV_REQUIRE_ALL="1")
    assert done.returncode == 1, done.stdout
    summary = done.stdout.split("PYCONV_REQUIRE_ALL=1 requires them to run")[1]
    assert "test_data_dir" in summary and "test_missing_dependency" in summary
    assert "test_platform_skip" not in summary  # on the allow-list


def test_ci_runs_the_readme_test_command_requiring_every_test():
    """.ci/run sets the variables before it runs the README's command (the part of CI that is
    a file's text, checked here; the hook itself is checked above)."""
    script = (REPO / ".ci" / "run").read_text()
    before_tests = script.split('bash -c "$test_cmd"')[0]
    assert "export PYCONV_REQUIRE_ALL=1" in before_tests
    assert "export PYCONV_DATA=" in before_tests
    assert "dataset-fashion-mnist" in before_tests
