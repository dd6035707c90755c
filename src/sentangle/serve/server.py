"""`sentangle serve`: check the arguments, then run the application under uvicorn.

FastAPI, uvicorn and python-multipart are the optional extra `sentangle[serve]`: this module imports
none of them at load time, so the rest of the `sentangle` command works without them.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import json
import os
import socket
import warnings
from pathlib import Path

import torch

from sentangle.core.errors import ConfigError
from sentangle.models.portable import read_model_folder
from sentangle.serve.browse import check_root
from sentangle.serve.models import default_model_dirs

ENV = "SENTANGLE_SERVE"  # the settings each worker process reads (uvicorn starts them by import string)
WORKER_START_S = 300
PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart", "pydantic": "pydantic"}


def _check_packages() -> None:
    missing = [pkg for module, pkg in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"sentangle serve needs {', '.join(missing)}: pip install 'sentangle[serve]'")


def quiet_missing_modalities() -> None:
    """A request without a modality the model reads is normal here, and its answer lists it under
    `missing`: no warning in the log for each one."""
    warnings.filterwarnings(
        "ignore", message=r".* has no .*, which .* was trained with: predicting with", category=UserWarning
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}; expected a TCP port between 1 and 65535")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); pick another --port"
        ) from None


def check_models(model_dirs: list[str]) -> list[str]:
    """The folders to serve (the default model's when none is given), each one checked."""
    dirs = list(model_dirs) or [str(d) for d in default_model_dirs()]
    if not dirs:
        raise ConfigError("give MODEL_DIR: a model folder written by sentangle export (several may be given)")
    for d in dirs:
        read_model_folder(d)  # CheckpointError naming the folder and the file at fault
    return [str(Path(d).resolve()) for d in dirs]


def serve(
    model_dirs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    runs: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted; every argument is checked before anything binds."""
    _check_packages()
    if workers < 1:
        raise ConfigError(f"--workers {workers}; expected a positive number of processes")
    settings = {
        "models": check_models(model_dirs),
        "runs": None if runs is None else str(check_root(runs)),
        "threads": max(1, (os.cpu_count() or 1) // workers),
    }
    _check_port(host, port)
    quiet_missing_modalities()
    uvicorn = importlib.import_module("uvicorn")
    if workers == 1:
        app = importlib.import_module("sentangle.serve.app").create_app(settings["models"], settings["runs"])
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    os.environ[ENV] = json.dumps(settings)
    uvicorn.run(
        "sentangle.serve.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # a worker answers the supervisor's health checks only once torch and its models are loaded,
        # which on a busy machine takes longer than the default 5 s (the worker is then killed)
        timeout_worker_healthcheck=WORKER_START_S,
    )


def app_from_env():
    """The application of one worker process, from the settings `serve` put in the environment."""
    settings = json.loads(os.environ[ENV])
    torch.set_num_threads(settings["threads"])  # the workers share the cores
    quiet_missing_modalities()
    return importlib.import_module("sentangle.serve.app").create_app(settings["models"], settings["runs"])
