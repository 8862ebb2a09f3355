"""``dstrf-report``: the HTML page of a sweep (rendered in headless Chromium where it is installed) and of a
single run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from dstrf.sweep.report import main
from dstrf.sweep.summary import aggregate

from .conftest import copy_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
)


def chromium(*args: str) -> str:
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@needs_chromium
def test_the_report_of_a_sweep_renders_in_chromium_with_its_setup_scores_figures_and_job_links(sweep_dir, tmp_path):
    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    assert main([str(sweep)]) == 0
    page = sweep / "report.html"
    dom = chromium("--dump-dom", page.as_uri())
    # every embedded figure decoded in the browser: the per-channel figure, model vs model, and the best/worst
    # channels' predictions of both groups
    n_figures = int(re.search(r'data-figures="(\d+)"', dom).group(1))
    assert n_figures == 4 and f'data-figures-decoded="{n_figures}"' in dom
    assert "sweep of 7 jobs" in dom
    assert "5 done, 1 incomplete (running, interrupted or failed), 1 missing" in dom
    assert "The sweep is not complete" in dom
    # the per-channel table holds summary.json's values; one model per trial in model.hidden=8: SE is NaN
    assert not (sweep / "summary.json").exists()  # the report changes nothing in the sweep but itself
    for group in aggregate(sweep, write=False).to_dict()["groups"]:
        for channel, r in zip(group["per_channel"]["channel"], group["per_channel"]["r_score"]):
            assert re.search(rf"<td>{channel}</td>\s*<td>[-0-9.]+</td>\s*<td>{r:.3f}</td>", dom), (group, channel)
    hidden8 = dom[dom.index("<h3>model.hidden=8</h3>", dom.index("Per-channel scores")) :]
    assert re.search(r"<td>[-0-9.]+</td>\s*<td>NaN</td>\s*</tr>", hidden8.split("</table>")[0])
    # a link per job, relative, to a directory that is there; metrics.json linked where the job wrote one
    links = [unquote(h) for h in re.findall(r'href="([^"]+)"', dom)]
    jobs = [job["dir"] for job in json.loads((sweep / "sweep.json").read_text())["jobs"]]
    assert {f"{job}/" for job in jobs if job != "fold1_jk2"} <= set(links)
    assert "<td>fold1_jk2</td>" in dom and "fold1_jk2/" not in links  # missing: named, no link to nowhere
    for link in links:
        assert not link.startswith("/") and (page.parent / link).exists(), link
    assert "fold1_jk0/metrics.json" in links and "fold1_jk1/metrics.json" not in links
    # and the page as a scientist sees it: a real picture, not a blank one
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200) and pixels.std() > 20


def test_the_report_of_a_single_run_has_its_test_scores_and_prediction(sweep_dir, tmp_path):
    run = shutil.copytree(sweep_dir / "fold0_jk0", tmp_path / "run")
    out = tmp_path / "elsewhere" / "page.html"
    assert main([str(run), "--out", str(out)]) == 0
    page = out.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "run of 1 job" in page and page.count("data:image/png;base64,") == 1
    for channel, r in zip(metrics["channels"], metrics["test"]["r"]):
        assert re.search(rf"<td>{channel}</td>\s*<td>[-0-9.]+</td>\s*<td>{r:.3f}</td>", page)
    assert 'href="../run/metrics.json"' in page  # relative to where the page was written
    assert not (run / "report.html").exists()  # nothing else written into the run


def test_a_path_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert f"{tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "is neither a dstrf run directory" in capsys.readouterr().err


def test_the_report_embeds_what_dstrf_estimate_wrote(sweep_dir, tmp_path):
    from dstrf.sweep.posthoc import main as estimate

    sweep = copy_sweep(sweep_dir, tmp_path / "sweep")
    assert main([str(sweep)]) == 0
    before = (sweep / "report.html").read_text().count("data:image/png;base64,")
    status = estimate([str(sweep), "--gradmap"])
    figures = sorted(p.relative_to(sweep).as_posix() for p in (sweep / "gradmap").rglob("*.png"))
    assert status == 0 and figures and main([str(sweep)]) == 0
    page = (sweep / "report.html").read_text()
    assert page.count("data:image/png;base64,") == before + len(figures)
    assert "Post-hoc estimates" in page and all(f"<figcaption>{f}</figcaption>" in page for f in figures)
