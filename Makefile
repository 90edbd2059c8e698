# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv and runs the whole pipeline for 60 s (broker, Redis, Ray, Serve, 2 cameras)
#   make test   creates .venv and runs the whole test suite
# (make compress-demo: just the compression core on a sample video)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SAMPLE  := runs/sample_camera.mp4

.PHONY: demo compress-demo test unit venv clean bench system-deps


venv: $(STAMP)

# torch is pinned first: 2.13.0 is a local CPU wheel here, anything else pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,pipeline,eval]'
	touch $(STAMP)

demo: $(STAMP)
	@if unshare -n true 2>/dev/null; then \
		unshare -n sh -c 'ip link set lo up && exec $(BIN)/streamdycoke demo --duration 60'; \
	else \
		$(BIN)/streamdycoke demo --duration 60; \
	fi

compress-demo: $(STAMP)
	$(BIN)/streamdycoke make-sample $(SAMPLE)
	$(BIN)/streamdycoke compress $(SAMPLE) --encoder pixels

bench: $(STAMP)
	$(BIN)/streamdycoke bench compress

REAL_CLIPS := runs/videos/real

# Tools the tests drive as real processes: ffmpeg (pushes an RTSP camera), prometheus + promtool (scrape a
# running pipeline, check and unit-test the alert rules), kubectl (renders the Kustomize overlays offline),
# redis-server (Debian's, built with TLS: the Redis TLS test), chromium + chromedriver (Debian's: the console's
# browser test drives them with Selenium; no browser is downloaded at run time).
# Installed with apt when missing and we are root.
system-deps:
	@missing=""; for t in ffmpeg:ffmpeg promtool:prometheus prometheus:prometheus kubectl:kubectl redis-server:redis-server chromium:chromium chromedriver:chromium-driver; do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing% }" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq || true; \
			for pkg in $$missing; do echo "installing $$pkg (apt)"; \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null \
				|| echo "WARNING: could not install $$pkg: the tests that need it will be skipped, saying why"; done; \
		else echo "WARNING: missing $$missing(not root): the tests that need them will be skipped, saying why"; fi; fi

# The whole suite, in three runs: the unit and slow lanes (no service; CPU-bound, so on 2 workers), the
# cluster lane (tests that start a Ray cluster of several nodes of their own), then the integration lane.
# Each run has the machine to itself: side by side on 2 cores they took as long and the soak slowed past
# its waits. The integration lane runs on 2 workers, a module at a time each (each worker its own broker,
# Redis and Ray): its tests mostly wait on real-time streams and restarts, the machine a third busy when
# they run one at a time, and 145 tests took 575 s instead of 817 s. Tests that start Ray must run in a
# loopback-only network namespace (Ray binds routable addresses), which has no network: the real sample
# clips are fetched first. Every run always runs; make fails if any did.
INTEGRATION = -m "integration and not cluster" -n 2 --dist loadfile --durations=25
CLUSTER = -m cluster --durations=5
test: $(STAMP) system-deps
	$(BIN)/python -m streamdycoke.samples $(REAL_CLIPS)
	@rc=0; isolated=1; \
	unshare -n true 2>/dev/null || { isolated=; echo "no network namespace here (needs root): tests that start Ray will be skipped"; }; \
	in_ns() { if [ -n "$$isolated" ]; then unshare -n sh -c "ip link set lo up && exec $$1"; else sh -c "$$1"; fi; }; \
	$(BIN)/python -m pytest -q -m "not integration" -n 2 --durations=10 || rc=1; \
	in_ns '$(BIN)/python -m pytest -q $(CLUSTER)' || rc=1; \
	in_ns '$(BIN)/python -m pytest -q $(INTEGRATION)' || rc=1; \
	exit $$rc

# The fast lane: unit tests only (no process or service started), under a minute; run it on every change.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m unit

clean:
	rm -rf $(VENV) runs
