# Two commands for a newcomer: `make demo` and `make test` (each sets up .venv first).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint bench proto clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

RUN ?= runs/quickstart
PORT ?= 50061

demo: setup
	@if [ -f $(RUN)/checkpoint.pt ]; then $(BIN)/semore-train --config configs/quickstart.yaml --out $(RUN) --resume; \
	else $(BIN)/semore-train --config configs/quickstart.yaml --out $(RUN); fi
	$(BIN)/semore-export --checkpoint $(RUN)/checkpoint.pt --out $(RUN)/policy.onnx
	$(BIN)/semore-eval --model $(RUN)/policy.onnx --episodes 10 --video $(RUN)/onnx_eval.mp4 --json $(RUN)/onnx_eval.json
	@echo "serving $(RUN)/policy.onnx on 127.0.0.1:$(PORT) and evaluating it through the server"
	@$(BIN)/semore-serve --model $(RUN)/policy.onnx --port $(PORT) > $(RUN)/serve.log 2>&1 & pid=$$!; \
	trap "kill $$pid 2>/dev/null" EXIT; \
	for i in $$(seq 100); do grep -q SERVING $(RUN)/serve.log && break; sleep 0.2; done; \
	$(BIN)/semore-eval --server 127.0.0.1:$(PORT) --episodes 3 --json $(RUN)/served_eval.json

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python -m benchmarks.train_speed
	$(BIN)/python -m benchmarks.export_latency
	$(BIN)/python -m benchmarks.serve_latency
	$(BIN)/python -m benchmarks.teacher_cost
	$(BIN)/python -m benchmarks.quickstart

proto: setup
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf $(VENV) runs *.egg-info
