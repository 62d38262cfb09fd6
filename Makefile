# Droplet for Blender — developer entry points. `make setup` is idempotent.
PYTHON ?= python3
VENV := .venv
BVENV := .venv-blender
BVENV42 := .venv-blender42
# The CPU build lies on disk on the dev/CI machines; on a GPU box the same pin fetches the CUDA build.
TORCH_SPEC ?= torch==2.13.0
BPY_SPEC ?= bpy==5.0.1
BPY42_SPEC ?= bpy==4.2.23
ARGS ?=

.PHONY: setup test lint serve demo extension clean

setup: $(VENV)/.installed $(BVENV)/.installed $(BVENV42)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[server,test]"
	touch $@

# Blender's Python is not the server's: bpy pins numpy < 2, so it gets its own environment, one per Blender
# tested: the current release and the 4.2 LTS that blender_manifest.toml promises.
$(BVENV)/.installed: constraints-blender.txt
	test -x $(BVENV)/bin/python || $(PYTHON) -m venv $(BVENV)
	$(BVENV)/bin/pip install -q --upgrade pip
	$(BVENV)/bin/pip install -q -c constraints-blender.txt "$(BPY_SPEC)" pytest pytest-timeout
	touch $@

$(BVENV42)/.installed: constraints-blender.txt
	test -x $(BVENV42)/bin/python || $(PYTHON) -m venv $(BVENV42)
	$(BVENV42)/bin/pip install -q --upgrade pip
	$(BVENV42)/bin/pip install -q -c constraints-blender.txt "$(BPY42_SPEC)" pytest pytest-timeout
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/pytest tests --ignore=tests/blender -q
	$(BVENV)/bin/python -m pytest tests/blender -q -p no:cacheprovider
	$(BVENV42)/bin/python -m pytest tests/blender -q -p no:cacheprovider

serve: $(VENV)/.installed
	$(VENV)/bin/droplet3d serve $(ARGS)

demo: $(VENV)/.installed $(BVENV)/.installed
	$(VENV)/bin/python scripts/demo.py $(ARGS)

extension: $(BVENV)/.installed
	$(BVENV)/bin/python scripts/build_extension.py

clean:
	rm -rf $(VENV) $(BVENV) $(BVENV42) build dist *.egg-info
