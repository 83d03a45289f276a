"""Make the README's picture of `--report`: the field report's two captures (tests/golden/two-ended)
analysed with `--report`, and the page's top screenshotted by headless Chromium.

    python3 tools/report_screenshot.py [OUT.png]     (default docs/report.png)

Needs Debian's `chromium`; no root, no lab.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.report.browser import CHROMIUM, WHY_ABSENT, screenshot  # noqa: E402

PAIR = Path("tests") / "golden" / "two-ended"
FLOW = "192.0.2.10:58853"  # the probe's own flow (the captures also hold the run's TTL-limited probes)


def main() -> int:
    if CHROMIUM is None:
        print(f"report_screenshot: {WHY_ABSENT}", file=sys.stderr)
        return 1
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report.png"
    with tempfile.TemporaryDirectory() as work:
        page = Path(work) / "report.html"
        subprocess.run([sys.executable, "-m", "probe", "analyze", str(PAIR / "06-field-report.pcap"),
                        str(PAIR / "06-field-report.server.pcap"), "--flow", FLOW, "--report", str(page)],
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        screenshot(page, out, 800, 940, scale=0.75)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
