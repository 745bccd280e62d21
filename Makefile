# PoseHub: two commands.
#   make up     install everything into the repo, then run the hub at http://127.0.0.1:8000
#   make test   install test needs, then run the whole suite
.PHONY: up test setup setup-test env weights docs check clean

PYTEST_ARGS ?=

up: setup
	.venv/bin/posehub up

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

test: setup-test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# make env IMAGE=pose: build the local environment of one image
env: setup
	.venv/bin/posehub env build $(IMAGE)

# DeepLabCut's ImageNet weights into the pose environment, once, where huggingface.co (or HF_ENDPOINT) is reachable;
# without them DeepLabCut trains from random weights (its run record says which)
weights: setup-test
	.envs/pose/bin/python -m posehub.pose.weights fetch

# regenerate the configuration reference in README.md from the schema
docs: setup
	.venv/bin/python scripts/update_readme.py

clean:
	rm -rf .venv .envs node_modules .stamps
