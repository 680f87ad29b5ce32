#!/usr/bin/env python3
"""Adds up the results of every suite that scripts/check ran and prints the
closing line `N passed, N failed, N skipped`. Exits non-zero when any test
failed or when no test ran at all."""

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def lit_counts(path):
    passed = failed = skipped = 0
    for test in json.loads(path.read_text()).get("tests", []):
        code = test.get("code")
        if code in ("PASS", "XFAIL"):
            passed += 1
        elif code in ("UNSUPPORTED", "SKIPPED", "EXCLUDED"):
            skipped += 1
        else:
            failed += 1
    return passed, failed, skipped


def junit_counts(path):
    passed = failed = skipped = 0
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        status = case.get("status", "")
        if "failure" in kinds or "error" in kinds or status == "fail":
            failed += 1
        elif "skipped" in kinds or status in ("notrun", "disabled"):
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main():
    results = Path(sys.argv[1])
    totals = [0, 0, 0]
    suites = [("lit", results / "lit.json", lit_counts),
              ("ctest", results / "ctest.xml", junit_counts),
              ("pytest", results / "pytest.xml", junit_counts)]
    for name, path, count in suites:
        if not path.exists():
            if (results / f"{name}.started").exists():
                print(f"{name}: the suite ran but wrote no report")
                totals[1] += 1
            continue
        try:
            p, f, s = count(path)
        except Exception as err:  # a suite whose report is unreadable failed
            print(f"{name}: cannot read {path}: {err}")
            p, f, s = 0, 1, 0
        print(f"{name}: {p} passed, {f} failed, {s} skipped")
        totals = [a + b for a, b in zip(totals, (p, f, s))]
    passed, failed, skipped = totals
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
