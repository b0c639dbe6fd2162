# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to a CPU build; pass e.g.
#   TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# where the default index would give a CUDA build, or install your own torch for GPUs.
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: demo test airflow clean-lake

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/interestlake demo

# One pytest process by default: on the 2-core CI machines two pytest-xdist workers (each
# with its own Spark session, JVMs and Python workers) made the run slower, not faster
# (CI: 2,526 s with two workers against 2,079 s serial; docs/testing.md). Where more cores
# are free, `make test TEST_WORKERS=4` spreads whole files over that many workers.
TEST_WORKERS ?= 1
test: $(STAMP)
	$(BIN)/python -m pytest $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) --durations=20

# A local Airflow (api-server, scheduler, DAG processor, triggerer; SQLite metadata DB
# under .airflow/) with the project's DAGs unpaused, spark-submit to SPARK_MASTER and the
# DAGs' default lake ./lakehouse (sample landing files are written there if it has none).
# UI on this machine only: http://localhost:8080, user admin, password printed at start-up.
AIRFLOW_HOME ?= $(CURDIR)/.airflow
# The jobs' Spark master (Airflow connection spark_default), e.g. spark://127.0.0.1:7077.
SPARK_MASTER ?= local[*]
airflow: $(STAMP)
	test -d lakehouse/landing || $(BIN)/interestlake generate-sample -q
	AIRFLOW_HOME=$(AIRFLOW_HOME) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/airflow_dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False \
	AIRFLOW__API__HOST=127.0.0.1 \
	AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "$(SPARK_MASTER)"}' \
	PATH=$(CURDIR)/$(BIN):$$PATH \
	$(BIN)/airflow standalone

clean-lake:
	rm -rf lakehouse
