"""The Gramine manifest template and `make sgx-train`, checked as text (Gramine is not installed here and
no enclave is built or run): rendered with placeholder values the manifest is valid TOML, runs a fixed
command with a fixed environment, forbids debug, uses DCAP, hashes Python, torch and simmim as trusted files,
puts the data on an encrypted mount keyed by the attester's key name, and the Makefile defines every
variable the template uses."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

from simmim.tee.attester import MOUNT_KEY_NAME

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "gramine" / "simmim-train.manifest.template"
VARIABLE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
PLACEHOLDERS = {"log_level": "error", "arch_libdir": "/lib/x86_64-linux-gnu", "entrypoint": "/usr/bin/python3.11",
                "venv": "/build/venv", "python_stdlib": "/usr/lib/python3.11", "python_version": "3.11",
                "app_dir": "/build/app", "data_dir": "/build/data", "exchange_dir": "/build/exchange",
                "threads": "4", "enclave_size": "16G", "max_threads": "64"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    text = TEMPLATE.read_text()
    text = text.replace("{{ gramine.libos }}", "/gramine/libsysdb.so").replace("{{ gramine.runtimedir() }}",
                                                                                "/gramine/runtime")
    return tomllib.loads(VARIABLE.sub(lambda m: PLACEHOLDERS[m.group(1)], text))


def test_the_command_and_environment_are_fixed(manifest):
    loader = manifest["loader"]
    assert loader["argv"] == ["python3", "-m", "simmim.tee.attester"]
    assert not any(key.startswith("insecure") for key in loader)
    settings = [line for line in TEMPLATE.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in settings if "insecure__" in line]  # no argv or host environment passthrough
    assert callable(importlib.import_module("simmim.tee.attester").main)


def test_a_production_enclave_with_dcap(manifest):
    assert manifest["sgx"]["debug"] is False
    assert manifest["sgx"]["remote_attestation"] == "dcap"


def test_python_torch_and_simmim_are_trusted_files(manifest):
    trusted = manifest["sgx"]["trusted_files"]
    assert "file:/usr/bin/python3.11" in trusted and "file:/usr/lib/python3.11/" in trusted
    site_packages = "file:/build/venv/lib/python3.11/site-packages/"
    assert site_packages in trusted  # holds simmim and torch (non-editable install)
    assert manifest["loader"]["env"]["PYTHONPATH"] == site_packages.removeprefix("file:").rstrip("/")
    assert manifest["sgx"]["allowed_files"] == ["file:/build/exchange/"]  # nothing secret, nothing executable


def test_the_data_mount_is_encrypted_with_the_attesters_key(manifest):
    mounts = {mount["path"]: mount for mount in manifest["fs"]["mounts"]}
    assert mounts["/data"]["type"] == "encrypted"
    assert mounts["/data"]["key_name"] == MOUNT_KEY_NAME
    assert "type" not in mounts["/exchange"]


def test_the_makefile_target_defines_every_template_variable():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\.PHONY:.*\bsgx-train\b", makefile, re.M)
    recipe = makefile[makefile.index("\nsgx-train:"):]
    defined = set(re.findall(r"-D([a-z_]+)=", recipe))
    used = set(VARIABLE.findall(TEMPLATE.read_text()))
    assert used == defined == set(PLACEHOLDERS)
    assert "deploy/gramine/simmim-train.manifest.template" in recipe and "gramine-sgx-sign" in recipe
