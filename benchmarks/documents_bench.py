"""Research over a long PDF: time and peak RSS of the research stage on a generated 300-page report.

    python benchmarks/documents_bench.py [--pages 300] [--runs 1]

Makes the PDF with fpdf2 (a writer podspool does not use, so the bench measures reading, not writing;
`pip install fpdf2`), then runs the research stage on it in a fresh process, as a worker does, and prints
the stage's time and that process's peak RSS. Targets: under 2 minutes, at most 300 MiB. The other
work on the machine raises the time; the RSS is the process's own.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ["tide", "moon", "gravity", "ocean", "harbour", "current", "salt", "depth", "shelf", "orbit", "wave", "coast", "estuary", "surge", "basin", "delta", "reef", "channel", "sediment", "flood", "ebb", "neap", "spring", "lunar", "solar", "water", "earth"]
MARKER = "The quokka estuary gauge recorded the highest spring tide of the decade."


def make_pdf(path: Path, pages: int) -> None:
    from fpdf import FPDF

    rng = random.Random(7)
    pdf = FPDF()
    pdf.set_title("A long tide report")
    pdf.set_font("Helvetica", size=10)
    for number in range(1, pages + 1):
        pdf.add_page()
        for paragraph in range(6):  # about 500 words a page, as a dense report has
            text = " ".join(rng.choice(WORDS) for _ in range(80)).capitalize() + "."
            if number == pages * 2 // 3 and paragraph == 2:
                text = MARKER + " " + text
            pdf.multi_cell(0, 5, text)
            pdf.ln(3)
    pdf.output(str(path))


def research_once(pdf: Path) -> None:
    """The child: one research stage, as a worker runs it; prints its figures as JSON."""
    from podspool.stages import artifacts
    from podspool.stages.base import EpisodeInput, StageContext
    from podspool.stages.registry import run_stage
    from podspool.stages.settings import ResearchSettings, StageSettings

    folder = pdf.parent / f"ep-{time.monotonic_ns()}"
    folder.mkdir()
    ctx = StageContext(settings=StageSettings(research=ResearchSettings(source_roots=[str(pdf.parent)])))
    episode = EpisodeInput(episode_id="ep_001_bench", batch_id="bench", number=1,
                           topic="The quokka estuary gauge and the spring tide", sources=(str(pdf),))
    started = time.perf_counter()
    result = run_stage("research", folder, episode, ctx)
    seconds = time.perf_counter() - started
    out, doc = artifacts.load_research(folder) if result.ok else (None, {})
    top = out.findings[0] if out and out.findings else None
    print(json.dumps({"ok": result.ok, "error": result.error, "seconds": round(seconds, 2),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "passages": doc.get("sources", [{}])[0].get("passages") if doc.get("sources") else None,
                      "top": {"location": top.location, "has_marker": MARKER[:30] in top.text} if top else None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        research_once(Path(args.child))
        return
    with tempfile.TemporaryDirectory(prefix="podspool-docbench-") as tmp:
        pdf = Path(tmp) / "report.pdf"
        started = time.perf_counter()
        make_pdf(pdf, args.pages)
        print(f"made {args.pages}-page PDF: {pdf.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - started:.1f}s")
        for run in range(1, args.runs + 1):
            child = subprocess.run([sys.executable, __file__, "--child", str(pdf)], capture_output=True, text=True,
                                   check=False)
            if child.returncode != 0:
                sys.exit(child.stderr[-3000:])
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"run {run}: research {figures['seconds']}s, peak RSS {figures['peak_rss_mib']} MiB, "
                  f"{figures['passages']} passages, top finding {figures['top']} (ok={figures['ok']} {figures['error'] or ''})")


if __name__ == "__main__":
    main()
