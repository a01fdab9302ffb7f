# Two entry points on a fresh machine (see README):
#   make book   set up, execute every notebook with the bundled tiny model, build the site in _build/html
#   make test   set up, run the test suite
# One switch per run on the real models (GPU; weights in the Hugging Face cache, see README):
#   make book PROFILE=sd21 DEVICE=cuda   execute every chapter that can run the profile (sd21, sd15, sd14-video,
#                                        tiny-v1, ...) with it, skip the others with the reason, build the site
# TORCH picks the PyTorch build installed before anything else: the default pin is a CPU wheel on machines that
# carry it locally and the platform's usual (CUDA on Linux) wheel elsewhere; override e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PROFILE ?=
DEVICE ?= cuda
SOURCE ?=
export HF_HUB_OFFLINE ?= 1

.PHONY: book test check-site clean

# Passive OpenMP waits here too: the kernels run torch with 2 threads, and on a machine with any other busy process
# spinning waits made a chapter 5x slower (seen: chapter 1 in 157 s instead of 29 s beside one training thread).
# PROFILE empty (the default): the bundled-tiny CPU run. PROFILE=name: scripts/build_book.py --profile name --device
# $(DEVICE) [--source $(SOURCE)], after installing the `pipelines` extra (transformers, datasets) as well.
book: $(VENV)/.installed-book $(if $(PROFILE),$(VENV)/.installed-pipelines)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python scripts/build_book.py$(if $(PROFILE), --profile $(PROFILE) --device $(DEVICE))$(if $(SOURCE), --source $(SOURCE))

# Passive OpenMP waits: on a loaded machine spinning torch threads otherwise stall each other (seen: 100x slower).
test: $(VENV)/.installed-test
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

check-site: $(VENV)/.installed-book
	bash scripts/install_browser.sh
	$(BIN)/python scripts/check_site.py _build/html

$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[$*]"
	touch $@

clean:
	rm -rf _build book/chapters
