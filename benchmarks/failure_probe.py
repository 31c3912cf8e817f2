"""How bad input and faults end: counts of clear / traceback / unclear / silent per class.

Runs every case of ``tests/test_failures.py`` (imported by path, so pytest is not needed)
in a fresh temporary folder against whatever ``genfilter`` is importable, and prints a
markdown table: one row per class, a total row, then one line per case that is not
``clear`` (id, class, outcome, first line of the message).

    .venv/bin/python benchmarks/failure_probe.py                      # this tree
    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/failure_probe.py   # another tree

Options: ``--only SUBSTRING`` (case ids containing it), ``--verbose`` (the full outcome of
every non-clear case), ``--out FILE`` (also write the markdown there).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests" / "test_failures.py"


def load_cases_module():
    spec = importlib.util.spec_from_file_location("genfilter_failure_cases", TESTS)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="Run only the cases whose id contains this.")
    ap.add_argument("--verbose", action="store_true", help="Print every non-clear outcome in full.")
    ap.add_argument("--out", type=Path, default=None, help="Also write the markdown to this file.")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("GENFILTER_TEST_THREADS", "1")))
    mod = load_cases_module()
    try:
        import genfilter

        where = f"genfilter {getattr(genfilter, '__version__', '?')} from {genfilter.__file__}"
    except Exception as exc:
        where = f"genfilter does not import: {type(exc).__name__}: {exc}"
    cases = [c for c in mod.CASES if args.only is None or args.only in c.id]

    outcomes = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="failure-probe-") as root:
        root = Path(root)
        mod._Shared.set_root(root / "_shared")
        (root / "_shared").mkdir()
        for i, case in enumerate(cases):
            folder = root / f"case{i:03d}"
            folder.mkdir()
            outcomes.append(mod.run_case(case, folder))
            print(
                f"  {outcomes[-1].status:<10} {case.id} ({outcomes[-1].seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    total_s = time.perf_counter() - t0

    statuses = list(mod.STATUSES)
    if any(o.status == "setup-error" for o in outcomes):
        statuses.append("setup-error")
    table = mod.counts_by_class(outcomes)
    lines = [
        f"Failure probe: {len(outcomes)} cases, {where}; {total_s:.0f} s.",
        "",
        "| class | cases | " + " | ".join(statuses) + " |",
        "|---|---|" + "---|" * len(statuses),
    ]
    totals = dict.fromkeys(statuses, 0)
    for cls, row in table.items():
        n = sum(row.get(s, 0) for s in statuses)
        lines.append(f"| {cls} | {n} | " + " | ".join(str(row.get(s, 0)) for s in statuses) + " |")
        for s in statuses:
            totals[s] += row.get(s, 0)
    lines.append(
        f"| **total** | **{len(outcomes)}** | "
        + " | ".join(f"**{totals[s]}**" for s in statuses)
        + " |"
    )
    bad = [o for o in outcomes if o.status != "clear"]
    if bad:
        lines += ["", "Cases that are not clear:", ""]
        for o in bad:
            msg = o.first_line.replace("|", "\\|")
            if len(msg) > 160:
                msg = msg[:157] + "..."
            why = "; ".join(o.reasons)
            lines.append(
                f"- `{o.case}` ({o.cls}): **{o.status}**: {why}. First line: `{msg or '<none>'}`"
            )
    text = "\n".join(lines)
    print(text)
    if args.verbose:
        for o in bad:
            print("\n" + "-" * 78 + "\n" + o.describe())
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
