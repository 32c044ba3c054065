"""The README's newcomer commands stay true: CI runs exactly the test command it shows."""

import re
from pathlib import Path

import pytest

from spfl.reporting import render

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


# --- what a new user reads (issue #23) ---------------------------------------------------------------

def readme_text() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_is_short_in_the_promised_order_and_keeps_the_results_markers():
    text = readme_text()
    assert len(text.splitlines()) <= 200
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Two commands (a fresh machine, no network needed for the data)", "## What you get",
                        "## Using the simulator", "## The pipeline, every day", "## Layout", "## Where next"]
    start, end = text.index("<!-- results:start -->"), text.index("<!-- results:end -->")
    assert start < end < text.index("## Using the simulator")


def test_readme_states_no_number_that_goes_stale():
    """Job, cell, run and test counts and run times come from the config or the outputs, not the README."""
    text = " ".join(readme_text().split())
    stale = re.findall(r"\b\d[\d,]* (?:jobs|cells|runs|tests|steps)\b|\b\d+ min(?:utes)?\b|\b\d+ s\b", text)
    assert stale == [], stale


def test_readme_links_point_to_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme_text())
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert links and not missing, missing


def test_every_readme_spfl_command_uses_a_shipped_example_spec():
    commands = [line for line in code_lines(readme_text()) if re.match(r"spfl (run|calibrate)\b", line)]
    assert commands
    for command in commands:
        spec = command.split()[2]
        assert spec.startswith("examples/") and (ROOT / spec).is_file(), command


def test_the_example_specs_are_valid_and_the_digits_one_runs(tmp_path):
    import subprocess
    import sys

    from spfl.configuration.reading import load_spec

    specs = sorted((ROOT / "examples").glob("*.yaml"))
    assert {p.name for p in specs} >= {"digits.yaml", "cifar10.yaml"}
    for path in specs:
        load_spec(path)
    result = subprocess.run([sys.executable, "-m", "spfl.cli", "run", str(ROOT / "examples" / "digits.yaml"),
                             "--set", "rounds=2", "--set", "eval_every=1", "--methods", "spfl,digital",
                             "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("spfl", "digital"):
        assert (tmp_path / "runs" / method / "summary.json").is_file()


def _results_block():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_block", ROOT / "workflow" / "scripts" / "results_block.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_blocks_are_written_from_the_headline_table_and_checked(tmp_path):
    import shutil

    from synthetic_records import make_plan, quick_like_config, records

    plan = make_plan(tmp_path / "records", quick_like_config())
    headline = render.build_table("headline", records(plan, plan.headline_runs()), plan.headline)
    csv = tmp_path / "headline.csv"
    render.write_table(headline, "headline", csv)
    root = tmp_path / "checkout"
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copy(ROOT / "docs" / "results.md", root / "docs" / "results.md")
    block = _results_block()
    assert block.main([str(csv), "--check"], root=root) == 1  # the committed blocks are placeholders
    assert block.main([str(csv), "--write"], root=root) == 0
    assert block.main([str(csv), "--check"], root=root) == 0
    readme = (root / "README.md").read_text()
    section = readme.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    assert section.lstrip().startswith("Largest gain on the confirmatory seeds (5-7): ")
    assert "| normalize: all + optimized sign share | **+49.3 [+45.5, +53.1]** |" in section
    results = (root / "docs" / "results.md").read_text()
    assert "| power sweep | P_max = 11 dBm | **+10.1 [+6.3, +13.9]**, n = 3, signsgd |  |" in results
    assert len(readme.splitlines()) <= 200


def test_the_readme_results_block_matches_the_quick_outputs_when_they_exist(monkeypatch):
    """After `snakemake --configfile config/quick.yaml`, the README's numbers are the outputs' numbers."""
    csv = ROOT / "results" / "quick" / "tables" / "headline.csv"
    if not csv.exists():
        pytest.skip("no quick outputs in this checkout (results/quick/tables/headline.csv)")
    if "<!-- results:start -->\n*The headline is filled in" in readme_text():  # the placeholder
        pytest.skip("the README's results block is still the placeholder")
    monkeypatch.chdir(ROOT)  # the block names the table by its path from the checkout
    assert _results_block().main([str(csv.relative_to(ROOT)), "--check"], root=ROOT) == 0
