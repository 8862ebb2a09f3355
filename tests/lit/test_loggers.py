"""wandb in mode auto: the right server port is probed, and a refused key sends the run offline with a warning.

Nothing here leaves the machine: every server is a thread on 127.0.0.1, and the probe's connection is faked
wherever a real host name appears.
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import socket
import threading

import pytest

from dstrf.lit import loggers
from dstrf.lit.loggers import _reachable, wandb_logger, wandb_mode

FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, the length wandb expects


class _Refuse(http.server.BaseHTTPRequestHandler):
    """Answers 401 to every request, as a wandb server does to an unknown API key."""

    def _refuse(self) -> None:
        self.server.requests.append(self.path)
        body = b'{"errors": [{"message": "user is not logged in"}]}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def auto_env(monkeypatch, tmp_path):
    """No WANDB_MODE (conftest sets offline for every other test), no key, no netrc, no error reports."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    return monkeypatch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://localhost:8080", ("localhost", 8080)),
        ("https://wandb.example.org:8443/", ("wandb.example.org", 8443)),
        ("https://api.wandb.ai", ("api.wandb.ai", 443)),
        ("http://wandb.example.org", ("wandb.example.org", 80)),
        ("api.wandb.ai", ("api.wandb.ai", 443)),
    ],
)
def test_the_probe_connects_to_the_port_of_the_base_url(monkeypatch, url, address):
    tried = []

    def fake_connection(addr, timeout):  # never touch the network
        tried.append(addr)
        raise ConnectionRefusedError

    monkeypatch.setattr(loggers.socket, "create_connection", fake_connection)
    assert _reachable(url) is False
    assert tried == [address]


def test_the_probe_reaches_a_server_on_a_non_default_port_and_not_a_closed_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert _reachable(f"http://127.0.0.1:{port}", timeout=2.0) is True
    assert _reachable(f"http://127.0.0.1:{port}", timeout=2.0) is False


def test_an_invalid_port_in_the_base_url_is_named():
    expected = "WANDB_BASE_URL='http://localhost:80x80': invalid port; expected e.g. http://localhost:8080"
    with pytest.raises(ValueError, match=re.escape(expected)):
        _reachable("http://localhost:80x80")


def test_auto_is_offline_and_says_why_without_a_key(auto_env):
    reason = "no API key for api.wandb.ai (set WANDB_API_KEY or run `wandb login`)"
    assert loggers._resolve("auto") == ("offline", reason)


def test_auto_is_offline_and_names_host_and_port_of_an_unreachable_server(auto_env):
    port = _free_port()
    auto_env.setenv("WANDB_API_KEY", FAKE_KEY)
    auto_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert loggers._resolve("auto") == (
        "offline",
        f"the server is unreachable at 127.0.0.1:{port} (WANDB_BASE_URL=http://127.0.0.1:{port})",
    )
    assert wandb_mode("auto") == "offline"


def test_auto_is_online_with_a_key_and_a_server_on_its_port(auto_env, refusing_server):
    auto_env.setenv("WANDB_API_KEY", FAKE_KEY)
    auto_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{refusing_server.server_address[1]}")
    assert wandb_mode("auto") == "online"


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["real", "passes"])
def test_a_refused_api_key_sends_the_run_offline_with_a_warning(auto_env, refusing_server, tmp_path, caplog, probe):
    import wandb

    url = f"http://127.0.0.1:{refusing_server.server_address[1]}"
    auto_env.setenv("WANDB_API_KEY", FAKE_KEY)
    auto_env.setenv("WANDB_BASE_URL", url)
    if probe == "passes":  # whatever the probe does, a server that answers 401 must not fail the run
        auto_env.setattr(loggers, "_reachable", lambda *args, **kwargs: True)
    with caplog.at_level(logging.WARNING, logger="dstrf.lit.loggers"):
        logger = wandb_logger(save_dir=str(tmp_path / "job"), mode="auto", init_timeout=5)
    try:
        run = logger.experiment
        assert run.offline is True
        assert refusing_server.requests, "wandb never asked the server on the URL's port"
        warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert warning.startswith(f"wandb is offline: could not start an online run at {url} (CommError: ")
        assert f"`wandb sync {run.settings.sync_dir}`" in warning
        assert run.settings.sync_dir.startswith(str(tmp_path / "job" / "wandb" / "offline-run-"))
        # Lightning's offline flag would set WANDB_MODE=dryrun for every later job of a multirun
        assert "WANDB_MODE" not in os.environ
    finally:
        wandb.finish()
        wandb.teardown()  # wandb's process-wide setup keeps WANDB_BASE_URL; the next test has another server


@pytest.mark.parametrize("env_mode", [None, ""])
def test_auto_without_a_key_logs_one_line_with_the_reason_and_the_sync_command(auto_env, tmp_path, caplog, env_mode):
    import wandb

    if env_mode is not None:  # WANDB_MODE= (empty) is unset, not an invalid mode
        auto_env.setenv("WANDB_MODE", env_mode)
    with caplog.at_level(logging.INFO, logger="dstrf.lit.loggers"):
        logger = wandb_logger(save_dir=str(tmp_path / "job"), mode="auto", init_timeout=5)
    try:
        lines = [r.getMessage() for r in caplog.records if r.name == "dstrf.lit.loggers"]
        assert lines == [
            "wandb is offline: no API key for api.wandb.ai (set WANDB_API_KEY or run `wandb login`). The run is kept "
            f"on disk; upload it later with `wandb sync {logger.experiment.settings.sync_dir}`"
        ]
        assert logger.experiment.offline is True
    finally:
        wandb.finish()
        wandb.teardown()  # wandb's process-wide setup keeps WANDB_BASE_URL; the next test has another server


def test_a_sweep_job_is_named_grouped_and_tagged_by_its_sweep_and_its_id_is_stable(tmp_path):
    from dstrf.lit.loggers import run_identity

    sweep = tmp_path / "multiruns" / "cv_jackknife-3f2a"
    swept = ["model=linear_strf,deep_encoder", "trainer.max_epochs=3"]
    job = ["model=linear_strf", "trainer.max_epochs=3", "split.fold=3", "split.jackknife=1"]
    first = run_identity(sweep / "model=linear_strf" / "fold3_jk1", sweep, job, swept)
    assert first["group"] == "cv_jackknife-3f2a" and first["job_type"] == "fold"
    assert first["name"] == "model=linear_strf/fold3_jk1"
    assert first["tags"] == ["model=linear_strf", "split.fold=3", "split.jackknife=1"]  # only what was swept
    again = run_identity(sweep / "model=linear_strf" / "fold3_jk1", sweep, job, swept)
    other = run_identity(sweep / "model=linear_strf" / "fold3_jk2", sweep, job, swept)
    copy = tmp_path / "b" / "cv_jackknife-3f2a"
    elsewhere = run_identity(copy / "model=linear_strf" / "fold3_jk1", copy, job, swept)
    assert first["id"] == again["id"] == elsewhere["id"] != other["id"]  # a re-run (or a copied sweep) continues
    single = run_identity(tmp_path / "runs" / "2026-12-02", model="DeepEncoder", data="synthetic")
    assert single["name"] == "DeepEncoder on synthetic" and single["group"] is None and single["tags"] == []
