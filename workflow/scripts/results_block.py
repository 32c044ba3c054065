"""Write the results blocks of README.md and docs/results.md from a headline table, so no number is typed.

    python workflow/scripts/results_block.py results/quick/tables/headline.csv          # print both blocks
    python workflow/scripts/results_block.py results/quick/tables/headline.csv --write  # write them in place
    python workflow/scripts/results_block.py results/quick/tables/headline.csv --check  # exit 1 if stale

README.md (between <!-- results:start --> and <!-- results:end -->): the summary sentences of the
headline table (the largest gain on the confirmation seeds, then on the exploratory ones) and a compact
table of SP-FL minus the best baseline per experiment and budget on the confirmation seeds (the
exploratory ones when the config has none).  docs/results.md (between <!-- quick-results:start --> and
<!-- quick-results:end -->): every row, the exploratory and confirmatory groups side by side, each with its
mean, paired 95 % interval, n and best baseline.  The numbers are those of the CSV, rounded to 0.1 point.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from spfl.reporting.tables.comparisons import CONFIRMATORY, EXPLORATORY
from spfl.reporting.tables.markdown import headline_notes

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = {"README.md": ("<!-- results:start -->", "<!-- results:end -->"),
          "docs/results.md": ("<!-- quick-results:start -->", "<!-- quick-results:end -->")}


def gain_text(row) -> str:
    """"+5.9 [+0.3, +11.6]" (bold when significant); "n/a" without a pair."""
    if not math.isfinite(row["gain_pp"]):
        return "n/a"
    text = f"{row['gain_pp']:+.1f}"
    if math.isfinite(row["gain_ci_low"]):
        text += f" [{row['gain_ci_low']:+.1f}, {row['gain_ci_high']:+.1f}]"
    return f"**{text}**" if row["significant"] == "yes" else text


def readme_block(table: pd.DataFrame, source: str) -> str:
    group = CONFIRMATORY if (table["seed_group"] == CONFIRMATORY).any() else EXPLORATORY
    rows = table[table["seed_group"] == group]
    notes = headline_notes(table)
    summary = notes[:2] if group == CONFIRMATORY else notes[:1]
    budgets = list(dict.fromkeys(rows["budget_label"].str.split(" = ").str[-1]))
    lines = [*summary, "",
             f"SP-FL minus the best baseline (percentage points of final test accuracy), "
             f"{rows['seeds'].iloc[0]}, mean [paired 95 % interval], bold where significant (`{source}`):", "",
             "| experiment | " + " | ".join(budgets) + " |", "|---|" + "---|" * len(budgets)]
    for label, part in rows.groupby("experiment_label", sort=False):
        cells = dict(zip(part["budget_label"].str.split(" = ").str[-1], part.apply(gain_text, axis=1)))
        lines.append(f"| {label} | " + " | ".join(cells.get(b, "") for b in budgets) + " |")
    return "\n".join(lines) + "\n"


def results_block(table: pd.DataFrame, source: str) -> str:
    groups = [g for g in (EXPLORATORY, CONFIRMATORY) if (table["seed_group"] == g).any()]
    names = {g: table.loc[table["seed_group"] == g, "seeds"].iloc[0] for g in groups}
    head = ["experiment", "budget"] + [f"{names[g]}: SP-FL minus best baseline (pp), n, best baseline"
                                       for g in groups]
    lines = [f"From `{source}` (bold: significant, the paired 95 % interval excludes 0):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = ["experiment_label", "budget_label"]
    for (label, budget), part in table.groupby(keys, sort=False):
        cells = []
        for g in groups:
            row = part[part["seed_group"] == g]
            cells.append("" if row.empty else
                         f"{gain_text(row.iloc[0])}, n = {int(row.iloc[0]['n'])}, {row.iloc[0]['best_baseline']}")
        lines.append(f"| {label} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", *headline_notes(table)[:2]]) + "\n"


def blocks(csv: Path) -> dict[str, str]:
    table = pd.read_csv(csv)
    source = str(csv)
    return {"README.md": readme_block(table, source), "docs/results.md": results_block(table, source)}


def replaced(text: str, start: str, end: str, body: str, where: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{where} lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    return head + start + "\n" + body + end + rest.split(end, 1)[1]


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("headline", type=Path, help="a headline.csv written by the pipeline")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the blocks into README.md and docs/results.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when a block differs from the table")
    args = parser.parse_args(argv)
    stale = []
    for name, body in blocks(args.headline).items():
        path = root / name
        text = path.read_text()
        new = replaced(text, *BLOCKS[name], body, name)
        if args.write and new != text:
            path.write_text(new)
            print(f"{name}: updated")
        elif args.check and new != text:
            stale.append(name)
        elif not (args.write or args.check):
            print(f"--- {name}\n{body}")
    for name in stale:
        print(f"{name}: its results block differs from {args.headline}; rerun with --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
