# promptseg -- the three commands of the README.
#   make demo   create .venv, install, segment the bundled CT with the bundled LiteMedSAM
#   make test   create .venv if needed, run the whole test suite
#   make bench  run the benchmarks and rewrite docs/benchmarks.md
#   make quality  LiteMedSAM and MobileSAM on the real cases (+ leave-one-case-out fine-tunes): docs/quality.md
#   make fuzz   the long fuzz campaign: 10,000 inputs per reader and parser (docs/reliability.md)
#   make web    rebuild the viewer page (web/ -> promptseg/server/static; needs node + npm)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

FUZZ_INPUTS ?= 10000

.PHONY: demo test bench quality fuzz web venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-torch.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-torch.txt
	# sam2 builds against the torch above (no CUDA extension): see the sam2 README
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation "sam2>=1.1"
	# dev: test tools; mobilesam: the MobileSAM backend (its tests skip without it)
	$(PY) -m pip install --quiet -e ".[dev,mobilesam]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/promptseg demo --output-dir demo_output

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py --output docs/benchmarks.md

quality: $(STAMP)
	$(PY) benchmarks/quality.py --output docs/quality.md --runs runs/quality --seeds 3 --finetune

fuzz: $(STAMP)
	$(PY) -m tests.fuzz --inputs $(FUZZ_INPUTS) --findings fuzz-findings --json fuzz-findings/counts.json

web:
	cd web && npm ci --no-audit --no-fund && node build.mjs

clean:
	rm -rf $(VENV) demo_output .pytest_cache fuzz-findings
