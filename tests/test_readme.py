"""The README's commands and Python example are what the project actually does."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_lines_hold_install_train_and_test_commands():
    head = "\n".join(README.splitlines()[:8])
    assert 'pip install -e ".[test,torch]" && orthoref train' in head
    assert re.search(r"^pytest\b", head, re.M)


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test,torch]"' in ci
    assert re.search(r"^orthoref train\b", ci, re.M)
    assert re.search(r"^pytest\s*$", ci, re.M)


def test_python_example_runs():
    """Every Python block but the fixture consumers (run by tests/test_oracle.py from a copy of data/golden,
    with torch or jax)."""
    blocks = re.findall(r"(<!-- (?:fixture-consumer|testing-example)-\w+ -->\s*)?```python\n(.*?)```", README, re.S)
    blocks = [code for marker, code in blocks if not marker]
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
