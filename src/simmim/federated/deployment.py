"""A real Flower deployment on this machine: one SuperLink and N SuperNodes, each its own process.

    with LoopbackDeployment(clients=3, workdir="runs/fed") as deployment:
        result = deployment.run(FedSettings(clients=3, rounds=3, aggregation="secagg"))

The processes talk over loopback HTTP exactly as they would across machines (docs/federated.md has
the multi-machine setup with TLS). SuperNode i holds partition i (`--node-config partition-id=i`).
Everything is started and stopped here; logs go to `workdir/logs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

import tomli_w

from simmim.errors import SimMIMError
from simmim.federated.settings import FedSettings

STARTUP_SECONDS = 60.0


class DeploymentError(SimMIMError):
    """The deployment could not start, or a run on it failed."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    """A Flower command from the running interpreter's environment (the venv need not be on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


class LoopbackDeployment:
    """Starts the SuperLink and SuperNodes on enter, stops them (and their app processes) on exit."""

    def __init__(self, clients: int, workdir: str | Path):
        if clients < 1:
            raise DeploymentError("a deployment needs at least one SuperNode")
        self.clients = clients
        self.workdir = Path(workdir).resolve()
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []

    def __enter__(self) -> LoopbackDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    def _env(self) -> dict:
        env = dict(os.environ, FLWR_HOME=str(self.flwr_home), FLWR_DISABLE_UPDATE_CHECK="1",
                   FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.05", PYTHONUNBUFFERED="1")
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        return env

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                    start_new_session=True)

    def start(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        connection = {"address": f"127.0.0.1:{self.port}", "insecure": True}
        (self.flwr_home / "config.toml").write_text(
            tomli_w.dumps({"superlink": {"default": "loopback", "loopback": connection}}))
        self.superlink = self._spawn("superlink", [
            _tool("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation"])  # state in memory: a fresh federation each time
        self._wait_for_port(self.port, self.superlink, "SuperLink")
        for index in range(self.clients):
            self.supernodes.append(self._spawn(f"supernode-{index}", [
                _tool("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(_free_port()), "--node-config", f"partition-id={index}"]))

    def _wait_for_port(self, port: int, process: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeploymentError(f"the {what} exited with code {process.returncode}; see {self.workdir / 'logs'}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise DeploymentError(f"the {what} did not listen on port {port} within {STARTUP_SECONDS:.0f} s")

    def kill_node(self, index: int) -> None:
        """Kills SuperNode `index` and its app processes at once (SIGKILL), as a crash or power cut would."""
        _signal_group(self.supernodes[index], signal.SIGKILL)
        self.supernodes[index].wait()

    def run(self, settings: FedSettings, *, out: str | Path | None = None, timeout: float | None = None,
            on_round=None, app_dir: str | Path | None = None) -> dict:
        """Submits the app with `settings` and waits for its `result.json`; DeploymentError if it fails.

        `on_round(record)` is called with each round's record as the server writes it. `app_dir`
        submits another Flower app directory instead of SimMIM's; it must take the FedSettings keys
        as run config and write `out/rounds.jsonl` and `out/result.json` as SimMIM's server app does.
        """
        out = Path(out or self.workdir / "run").resolve()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        settings = replace(settings, out=str(out))
        overrides = self.workdir / "run-config.toml"
        overrides.write_text(tomli_w.dumps(settings.to_run_config()))
        with contextlib.ExitStack() as stack:
            if app_dir is None:
                app_dir = stack.enter_context(resources.as_file(resources.files("simmim.federated") / "flower_app"))
            submitted = subprocess.run([_tool("flwr"), "run", str(app_dir), "loopback", "--run-config", str(overrides)],
                                       env=self._env(), capture_output=True, text=True, timeout=120)
        if submitted.returncode != 0:
            raise DeploymentError(f"flwr run failed: {(submitted.stdout + submitted.stderr).strip()[-2000:]}")
        limit = timeout or settings.round_timeout * (4 * settings.rounds + 2) + STARTUP_SECONDS
        deadline = time.monotonic() + limit
        seen = 0
        while time.monotonic() < deadline:
            if on_round is not None and (out / "rounds.jsonl").exists():
                lines = (out / "rounds.jsonl").read_text().splitlines()
                for line in lines[seen:]:
                    on_round(json.loads(line))
                seen = len(lines)
            if (out / "result.json").exists():
                result = json.loads((out / "result.json").read_text())
                if "error" in result:
                    raise DeploymentError(f"the federated run failed: {result['error']} "
                                          f"(logs: {self.workdir / 'logs'})")
                return result
            if self.superlink is not None and self.superlink.poll() is not None:
                raise DeploymentError(f"the SuperLink exited with code {self.superlink.returncode}")
            time.sleep(0.2)
        raise DeploymentError(f"no result within {limit:.0f} s; logs: {self.workdir / 'logs'}")

    def stop(self) -> None:
        for process in [*self.supernodes, self.superlink]:
            if process is not None and process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        for process in [*self.supernodes, self.superlink]:
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # app processes left behind in the group


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def record_result(out: Path, compute: Callable[[], dict]) -> None:
    """What a server app does for `run` to learn the outcome: `out/result.json`, written whole, holding
    `compute()`'s result or, if it raised, the error (whatever it was) and its traceback."""
    try:
        result = compute()
    except Exception as error:  # the launcher must learn why, whatever it was
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    partial = out / "result.json.tmp"
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(out / "result.json")
