"""The HTML report renders in headless Chromium (Debian's chromium package) with every embedded image decoded."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from analysis import plots, report
from tuner.experiment.ranking import rank_trials
from tests.analysis.test_plots_and_report import fabricated_experiment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `images ${loaded}/${images.length}`;
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_html_report_renders_with_every_image_loaded(tmp_path):
    experiment = fabricated_experiment(tmp_path)
    ranked = rank_trials(experiment.trials, experiment.history, "eval_rewards/margins")
    figures = plots.plot_curves(experiment.history, "a", tmp_path / "figures")
    figures += plots.plot_parameters(ranked, tmp_path / "figures")
    html = report.write(report.Report("t", experiment, {"dpo": ranked}, figures), tmp_path)["html"]
    shutil.rmtree(tmp_path / "figures")  # self-contained: nothing may come from beside the file
    checked = tmp_path / "checked.html"
    checked.write_text(html.read_text().replace("</body>", CHECK + "</body>"))
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           checked.as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", done.stdout)
    assert title, done.stderr[-2000:]
    assert title.group(1) == f"images {len(figures)}/{len(figures)}"
