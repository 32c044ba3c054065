"""The README's newcomer commands stay true: CI runs exactly the test command it shows."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_lines(text: str) -> list[str]:
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_ci_runs_the_readme_test_command():
    readme = code_lines((ROOT / "README.md").read_text())
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    test_commands = [line for line in readme if line.endswith("pytest")]
    assert len(test_commands) == 1, test_commands
    assert test_commands[0] in ci


def test_readme_main_job_uses_an_existing_config():
    readme = code_lines((ROOT / "README.md").read_text())
    main_job = [line for line in readme if "snakemake --cores" in line and line.startswith("python3 -m venv")]
    assert len(main_job) == 1, main_job
    config = re.search(r"--configfile (\S+)", main_job[0]).group(1)
    assert (ROOT / config).is_file()


def test_readme_installs_the_tested_versions():
    """Both newcomer commands and CI install with constraints.txt, which pins every package but spfl."""
    readme = code_lines((ROOT / "README.md").read_text())
    installs = [line for line in readme if line.startswith("python3 -m venv") and "pip install" in line]
    assert len(installs) == 2 and all("-c constraints.txt" in line for line in installs), installs
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", line) for line in pins), pins
    names = {line.split("==")[0].lower() for line in pins}
    assert "spfl" not in names and {"torch", "snakemake", "pandas", "pytest"} <= names


def test_readme_python_example_runs_and_prints_what_the_readme_says():
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    examples = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "from spfl." in block]
    assert len(examples) == 1, "one Python example of the simulator"
    result = subprocess.run([sys.executable, "-c", examples[0]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.strip().splitlines()
    assert len(printed) == 2
    flat = " ".join(text.split())
    for line in printed:
        assert f"`{line}`" in flat, f"the README does not show the printed line {line!r}"
