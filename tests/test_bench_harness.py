"""The benchmark harness works: its quick mode runs end to end and writes every section.
(No timing is asserted here: figures live in BENCHMARKS.md, produced by bench/run.sh --full.)"""

import subprocess
import sys

import pytest

from conftest import PG_MAJOR, REPO

SECTIONS = ["## Enqueue", "## Scale", "## Memory", "## The first SMS sign-in", "## End-to-end latency",
            "## Delivery throughput", "## Two hosts"]


@pytest.mark.slow
@pytest.mark.skipif(PG_MAJOR != 15, reason="the benchmark runs on the host's PostgreSQL 15")
def test_quick_benchmark_runs_and_reports(tmp_path):
    run = subprocess.run([sys.executable, REPO / "bench" / "run.py", "--quick", "--output", tmp_path],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = (tmp_path / "BENCHMARKS.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    assert "| bare INSERT | 1 |" in report and "| 0 ms | 8 | 600 | mysmshook |" in report
    assert "| SQL-only install send_sms | 1 |" in report and "The SQL-only install's hooks" in report
    # The plan of the worker's own claim function, as auto_explain saw it run.
    assert "Index Scan using job_queue_due_idx" in report and "Update on job_queue" in report
    assert "Backend time per job" in report and "Memory —" in report
    assert "| loaded at first use |" in report and "| preloaded |" in report
    assert "| 0 ms | 8 | 600 | external |" in report
    assert (tmp_path / "delivery.png").stat().st_size > 10_000
