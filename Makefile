# The two set-up commands: `make demo` (the main job on embedded defaults: the playback service with the sample
# title, open at http://127.0.0.1:8080/) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo render-demo test test-quick lint bench image image-check clean

install: $(VENV)/.installed tests/webrtc_clients/node_modules/.package-lock.json

# the npm WHIP and WHEP clients the browser tests drive in Chromium (whip-whep, MIT), pinned by the lock file
# (without npm the service installs and runs all the same; only that browser test is skipped)
tests/webrtc_clients/node_modules/.package-lock.json: tests/webrtc_clients/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/webrtc_clients --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the WHIP/WHEP browser test (tests/test_browser_edge.py) will be skipped"; fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q -e ".[dev]"
	# MediaPipe's face models (Apache-2.0) ship inside this wheel; it needs numpy<2, so it is downloaded, never
	# installed, and stream.perception.model_files copies the model files out of it (sha256-checked) into .venv/share/recast
	$(BIN)/pip download -q --no-deps --only-binary=:all: --dest $(VENV)/wheels mediapipe==0.10.21
	$(BIN)/python -m stream.perception.model_files install $(VENV)/wheels/mediapipe-0.10.21-*.whl
	touch $@

demo: install
	$(BIN)/recast serve --demo

render-demo: install
	$(BIN)/recast render --demo -o demo.mp4

lint: install
	$(BIN)/ruff check stream engines export tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

test-quick: lint
	$(BIN)/python -m pytest -m "not slow"

# the CPU image built here (a local Debian base, this machine's pip settings; docker/build_local.sh), and the
# release check that runs it and plays a title, a WHEP player and a live channel from it (needs `dockerd &`)
image:
	docker/build_local.sh recast:cpu

image-check: install
	RECAST_IMAGE=recast:cpu $(BIN)/python -m pytest -m image -s tests/test_image.py

bench: install
	$(BIN)/recast bench ../shared/media/videos/liveportrait_s18.mp4 --json bench.json

clean:
	rm -rf $(VENV) demo.mp4 bench.json tests/webrtc_clients/node_modules
