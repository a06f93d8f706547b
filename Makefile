# The README's two commands. Both create (or reuse) .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test bench clean services constraints

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "raydiant needs Python >= 3.11 (set PYTHON=python3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# The 1.x DashScope SDK, for contract tests, beside the 2.x one (tests put it on PYTHONPATH).
	$(PY) -m pip install --quiet --no-deps --upgrade --target var/sdk/dashscope-1 "dashscope==1.27.8"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: export RAYDIANT_CACHE ?= $(CURDIR)/var/cache
demo: $(STAMP)
	$(VENV)/bin/raydiant models build-tiny var/models/tiny
	$(VENV)/bin/raydiant models list
	$(VENV)/bin/raydiant generate "a lighthouse on a cliff at sunset, oil painting" \
		--model flux-schnell --n 4 --seed 42 --out var/demo
	$(VENV)/bin/raydiant generate "a red fox in the snow" \
		--model stable-diffusion-xl --size 1024*1024 --steps 4 --seed 7 --out var/demo
	@echo "images are in var/demo/"
	$(PY) -m serve.local.demo
	$(PY) -m jobs.demo_prompts var/demo-prompts.parquet 200
	$(VENV)/bin/raydiant render --input var/demo-prompts.parquet --output var/demo-batch \
		--size 512*512 --steps 2 --batch-size 4
	$(VENV)/bin/raydiant gallery var/demo-batch
	@echo "batch images and metadata are in var/demo-batch/ (rerun the render: nothing is redone);"
	@echo "look at them in var/demo-batch/index.html"

# Servers the tests start themselves (on free loopback ports); installed here when missing.
# Debian packages: redis-server (task store, rate limits), chromium + chromium-driver (page tests).
SERVICE_PACKAGES := redis-server:redis-server chromium:chromium chromedriver:chromium-driver
services:
	@missing="$$(for pair in $(SERVICE_PACKAGES); do command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done)"; \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
		|| echo "warning: could not install $$missing; their tests will skip (or fail under CI=true)"; \
	fi

# Two workers: most tests wait on Ray, servers and polling more than on the CPU. Each module
# runs on one worker (tests/conftest.py groups them), the contract tests all on one. A worker
# that dies ends the run at once (--max-worker-restart 0): with test groups, xdist's replacement
# worker can wait forever for the dead one's group, and a hung run says less than a failed one.
test: $(STAMP) services
	$(PY) -m pytest -n 2 --dist loadgroup --max-worker-restart 0 --durations=15

bench: $(STAMP)
	$(PY) bench/engine.py

# The image's dependency versions: those of this tested environment (infra/docker/constraints.txt).
constraints: $(STAMP)
	$(PY) infra/docker/write_constraints.py

clean:
	rm -rf var .pytest_cache
