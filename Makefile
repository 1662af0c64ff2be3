# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-quick test lint bench clean sgx-train

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,hf]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/simmim demo --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/simmim demo --quick --out runs/demo-quick

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# `simmim train` inside an SGX enclave with Gramine (deploy/gramine, docs/tee.md). NOT built or run on
# SimMIM's machines: it needs Gramine, an SGX host with DCAP, and a key broker with a relay to /exchange.
sgx-train:
	set -e; out=build/sgx; mkdir -p $$out/app $$out/data $$out/exchange; \
	python3 -m venv $$out/venv; $$out/venv/bin/pip install --quiet '.[dcap]'; \
	cp $${TRAIN_CONFIG:-src/simmim/configs/tiny.toml} $$out/app/train.toml; \
	py=$$(readlink -f $$out/venv/bin/python3); \
	gramine-manifest -Dlog_level=error -Darch_libdir=/lib/x86_64-linux-gnu -Dentrypoint=$$py \
	  -Dvenv=$$(realpath $$out/venv) -Dpython_stdlib=$$($$py -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])') \
	  -Dpython_version=$$($$py -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') \
	  -Dapp_dir=$$(realpath $$out/app) -Ddata_dir=$$(realpath $$out/data) -Dexchange_dir=$$(realpath $$out/exchange) \
	  -Dthreads=4 -Denclave_size=16G -Dmax_threads=64 \
	  deploy/gramine/simmim-train.manifest.template $$out/simmim-train.manifest; \
	gramine-sgx-sign --manifest $$out/simmim-train.manifest --output $$out/simmim-train.manifest.sgx; \
	gramine-sgx-sigstruct-view $$out/simmim-train.sig; \
	cd $$out && gramine-sgx simmim-train
