# Two entry points on a fresh machine (Python 3.11, root for apt):
#   make demo   install, export Conv2Former-N, compile it for arm64 -> build/
#   make test   install (pip + apt for the emulated aarch64 board), run the test suite
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: setup setup-system demo test lint clean

setup:
	# torch first and pinned: the CPU wheel lies on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"

setup-system: setup
	# The emulated aarch64 board: qemu-user-static (apt, root), then an aarch64 Python + TVM in ~/.cache.
	bash scripts/setup_emulator.sh
	$(PYTHON) -m c2f_edge.emulator setup
	# zig builds its libc cache per target on first use (minutes); do it once, outside the tests.
	$(PYTHON) -m c2f_edge.crosslink
	# armv7 has no TVM runtime wheel: its kernels run under qemu-arm against a Debian armhf libc.
	$(PYTHON) -m c2f_edge.kernel_runner setup

demo: setup
	c2f-edge export --weights synthetic --out build/onnx
	c2f-edge compile --target arm64 --onnx build/onnx/model.onnx --out build/arm64

test: setup setup-system
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	ruff check c2f_edge tests scripts

clean:
	rm -rf build .pytest_cache
