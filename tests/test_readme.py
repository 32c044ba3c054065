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
