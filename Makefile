# Two entry points on a fresh machine (Python 3.11, root for apt):
#   make demo   install, export Conv2Former-N, compile it for arm64 -> build/
#   make test   install (pip + apt for the emulated aarch64 board), run the test suite
# Both install into a virtual environment, .venv/ (created if missing), with the versions pinned in
# constraints.txt. PYTHON=/path/to/python uses another interpreter instead.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP ?= $(PYTHON) -m pip
BIN = $(dir $(PYTHON))
PYTEST_ARGS ?=
# scripts/setup_emulator.sh options; CI passes --update always (a newcomer's path, even where lists exist)
APT_ARGS ?=

.PHONY: setup setup-system demo test lint lock clean retune-host

setup:
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x "$(PYTHON)" ]; then \
		echo "creating the virtual environment $(VENV)/ ($$(python3 --version))"; python3 -m venv $(VENV); fi
	# torch first and pinned: the CPU wheel lies on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	@echo "installed into $$($(PYTHON) -c 'import sys; print(sys.prefix)') (pinned by constraints.txt)"

setup-system: setup
	# The emulated aarch64 board: qemu-user-static (apt, root), then an aarch64 Python + TVM in ~/.cache.
	PYTHON=$(PYTHON) bash scripts/setup_emulator.sh $(APT_ARGS)
	$(PYTHON) -m c2f_edge.board.emulator setup
	# zig builds its libc cache per target on first use (minutes); do it once, outside the tests.
	$(PYTHON) -m c2f_edge.backend.crosslink
	# armv7 has no TVM runtime wheel: its kernels run under qemu-arm against a Debian armhf libc.
	$(PYTHON) -m c2f_edge.board.kernel_runner setup
	# Instruction counts on emulated ARM cores: a qemu plugin of ours, built against the installed qemu-user.
	$(PYTHON) -m c2f_edge.board.insn_count setup
	# Mali and Adreno kernels run here: our OpenCL runtime for the TVM wheel, over PoCL (installed above).
	$(PYTHON) -m c2f_edge.board.opencl setup

demo: setup
	$(BIN)c2f-edge export --weights synthetic --out build/onnx
	$(BIN)c2f-edge compile --target arm64 --onnx build/onnx/model.onnx --out build/arm64

test: setup setup-system
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# Re-tune this machine's host log after a change to the kernels (a schedule rule, a pass, PIPELINE_VERSION).
# It tunes into build/retune-host/ (an interrupted run resumes there), starting from this CPU's shipped log:
# after a version bump the kernels that did not change keep their records (tune/carry.py), so the trials go
# to the changed ones. RETUNE_FRESH=1 starts from nothing: about 45 minutes for 1,500 trials on 2 cores, so
# run it in the background. Then it replaces tuning_logs/host/<cpu>-<cores>cores/: commit that.
RETUNE_TRIALS ?= 1500
retune-host: setup
	@test -f build/onnx/model.onnx || $(BIN)c2f-edge export --weights synthetic --out build/onnx
	@dest=tuning_logs/host/$$($(PYTHON) -c 'from c2f_edge.backend import targets; print(targets.get("host").machine())'); \
	if [ -z "$(RETUNE_FRESH)" ] && [ ! -f build/retune-host/database_tuning_record.json ] && \
		[ -f $$dest/database_tuning_record.json ]; then \
		mkdir -p build/retune-host && cp $$dest/meta.json $$dest/database_*.json build/retune-host/ && \
		echo "starting from $$dest"; fi; \
	$(BIN)c2f-edge tune --target host --onnx build/onnx/model.onnx --trials $(RETUNE_TRIALS) --work-dir build/retune-host && \
	rm -rf $$dest && mkdir -p $$dest && \
	cp build/retune-host/meta.json build/retune-host/database_*.json $$dest/ && echo "wrote $$dest: commit it"

lint:
	$(BIN)ruff check c2f_edge tests scripts

# Re-resolve the pins after a dependency change: a scratch venv without constraints, frozen into
# constraints.txt (its comment header kept). Then run `make test` and commit both files.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q torch==2.13.0
	.lock-venv/bin/python -m pip install -q -e ".[dev,bench]"
	{ grep '^#' constraints.txt; .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } \
		> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf build .pytest_cache
