# The two commands of the README: `make run` and `make test`. Each sets up
# everything it needs from nothing: a virtual environment, the pinned CPU build
# of torch (a bare "torch" requirement would pull a multi-GB CUDA build), the
# project, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint viz serve mlflow-ui bench airflow-dag clean

$(BIN)/kedro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/kedro

run: install
	$(BIN)/kedro run $(ARGS)
	@echo
	@echo "Start the search service with:  make serve"

# The review page's test drives a headless Chromium (Debian's chromium and
# chromium-driver, about 45 s to install); the Java client's test
# (examples/java) needs a JDK 17 and Debian's PostgreSQL JDBC driver
# (libpostgresql-jdbc-java). Without apt (not root, offline) a test whose
# tools are missing is skipped and says why.
JDBC_JAR := /usr/share/java/postgresql.jar

test: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { echo "Installing chromium for the review page's browser test..."; \
	       apt-get install -y -q chromium chromium-driver >/dev/null \
	       || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; } \
	  || echo "Could not install chromium: the browser test of the review page will be skipped."
	@test -f $(JDBC_JAR) \
	  || { echo "Installing the PostgreSQL JDBC driver for the Java client's test..."; \
	       apt-get install -y -q libpostgresql-jdbc-java >/dev/null \
	       || { apt-get update -q >/dev/null && apt-get install -y -q libpostgresql-jdbc-java >/dev/null; }; } \
	  || echo "Could not install libpostgresql-jdbc-java: the Java client's test will be skipped."
	$(BIN)/lint-imports
	$(BIN)/pytest $(ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

viz: install
	$(BIN)/kedro viz build

serve: install
	$(BIN)/python -m product_search.service $(ARGS)

# kedro-mlflow starts the `mlflow` command, which lives in the virtual environment.
mlflow-ui: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/kedro mlflow ui $(ARGS)

# The Airflow DAG, airflow_dags/product_search_prod_dag.py (docs/airflow.md):
# one task per pipeline namespace, in the prod environment, reading the
# configuration archive that `kedro package` writes from where the Airflow
# image keeps it. Change deploy/airflow_dag_template.j2 or
# conf/base/airflow.yml, then run this again. The command starts a Kedro
# session in that environment, and kedro-mlflow opens its tracking store:
# conf/prod reads MLFLOW_TRACKING_URI, here the project's own store.
AIRFLOW_ENV ?= prod
AIRFLOW_CONF_SOURCE ?= /opt/airflow/product-search/conf-product_search.tar.gz

airflow-dag: install
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/data/mlflow.db} \
	$(BIN)/kedro airflow create --group-by namespace --env $(AIRFLOW_ENV) \
	  --jinja-file deploy/airflow_dag_template.j2 --conf-source $(AIRFLOW_CONF_SOURCE)
	$(BIN)/ruff format -q airflow_dags

clean:
	rm -rf $(VENV)
