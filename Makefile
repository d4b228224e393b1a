# The two set-up commands of the README, plus benchmarks.
#   make demo   the main job: `taxi-pipeline local`, the whole pipeline on the bundled real sample, with pictures in out/
#   make test   every test: format, lints, unit, property and integration tests against the stand-ins
#   make bench  the benchmarks of docs/BENCHMARKS.md
#   make flink-peer  the Flink peer of the aggregate function, measured (README cost comparison)
#   make soak   the whole-pipeline simulation over thousands of seeds (SEEDS=N, FIRST_SEED=S; SEED=S replays one)
#   make build / deploy / delete  the stack on AWS with the pinned SAM CLI (README, "Deploy on AWS")
#   make sam-build  both Lambda bootstraps for both architectures with `sam build`, as CI checks it

.PHONY: demo test bench flink-peer soak standins deploy-tools template-lint sam-build build deploy delete

# Local stand-ins: DynamoDB Local and kinesalite pinned by package.json / package-lock.json
# (they run on the machine's Java and Node.js), osmem-server pinned by requirements-standins.txt.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

target/.standins-pip: requirements-standins.txt
	python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-standins.txt
	mkdir -p target && touch $@

standins: node_modules/.package-lock.json target/.standins-pip
	@command -v java >/dev/null || { echo "java is needed for DynamoDB Local (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v node >/dev/null || { echo "node is needed for kinesalite (apt-get install nodejs)" >&2; exit 1; }

# Deployment tools pinned by requirements-deploy.txt (AWS SAM CLI, cfn-lint, cargo-lambda
# with Zig), in their own virtual environment so their boto3 pins meet no other package's.
DEPLOY_TOOLS := target/deploy-tools
SAM := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(DEPLOY_TOOLS)/bin:$$PATH" sam

$(DEPLOY_TOOLS)/.installed: requirements-deploy.txt
	python3 -m venv $(DEPLOY_TOOLS)
	$(DEPLOY_TOOLS)/bin/pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	touch $@

deploy-tools: $(DEPLOY_TOOLS)/.installed

# template.yaml: SAM's validation with its linter, and cfn-lint itself; both fail on warnings.
template-lint: deploy-tools
	$(SAM) validate --lint
	$(DEPLOY_TOOLS)/bin/cfn-lint template.yaml

# The stack on AWS. Its parameters are samconfig.toml's [default.global.parameters]
# parameter_overrides, which build and deploy both read; PARAMETERS="Name=value ..."
# replaces them for one command (give the same to build and deploy).
BUILD_DIR ?= .aws-sam/build
OVERRIDES = $(if $(PARAMETERS),--parameter-overrides '$(PARAMETERS)')

# Both bootstraps, for the stack's Architecture (arm64 needs `rustup target add aarch64-unknown-linux-gnu`),
# then a check that each binary is built for it.
build: deploy-tools
	python3 scripts/deploy_check.py settings
	$(SAM) build --build-dir $(BUILD_DIR) $(OVERRIDES)
	python3 scripts/deploy_check.py architecture $(BUILD_DIR) $(PARAMETERS)

deploy: deploy-tools
	python3 scripts/deploy_check.py architecture $(BUILD_DIR) $(PARAMETERS)
	$(SAM) deploy --template-file $(BUILD_DIR)/template.yaml $(OVERRIDES)

delete: deploy-tools
	$(SAM) delete

# CI: make build for each architecture into its own directory (arm64 cross-links
# with cargo-lambda's Zig; `rustup target add` does nothing once the target is there).
sam-build:
	$(MAKE) build BUILD_DIR=target/sam-build/x86_64 PARAMETERS=Architecture=x86_64
	if rustup target add aarch64-unknown-linux-gnu; then \
	  $(MAKE) build BUILD_DIR=target/sam-build/arm64 PARAMETERS=Architecture=arm64; \
	else \
	  echo "sam-build: the aarch64 Rust target cannot be installed on this machine; arm64 not built" >&2; \
	fi

# INPUT=path/to/tlc.csv[.gz] runs another TLC file instead of the bundled sample. The live dashboard's URL
# is printed at the start; LIVE=60 replays at 60x and keeps the dashboard up afterwards, until Ctrl-C.
demo: standins
	cargo run --release -p taxi-pipeline -- local $(if $(INPUT),--input $(INPUT)) $(if $(LIVE),--speedup $(LIVE) --keep-serving)

test: standins deploy-tools template-lint
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build -q -p taxi-standins
	target/debug/taxi-standins cargo nextest run --workspace --no-fail-fast

bench: standins
	cargo bench -p taxi-core --bench preaggregate --bench batch_chunk
	cargo build -q -p taxi-standins
	target/debug/taxi-standins cargo bench -p taxi-integration-tests --bench dynamodb_writes --bench close_latency
	cargo bench -p taxi-pipeline --bench replay
	cargo bench -p taxi-pipeline --bench batch

# The Flink peer of the aggregate function, for the README's Managed Flink sizing
# (Flink's jars from PyPI, a JDK 17; SAMPLE=, REPETITIONS=).
flink-peer:
	bench/flink-peer/run.sh

# The deterministic simulation (crates/taxi-core/tests/sim) over many seeds, with figures;
# `make test` runs a few hundred. SEED=S replays one seed alone with its trace.
SEEDS ?= 5000
FIRST_SEED ?= 1000000
soak:
ifdef SEED
	SEED=$(SEED) cargo test --release -p taxi-core --test simulation replay_seed -- --nocapture
else
	SEEDS=$(SEEDS) FIRST_SEED=$(FIRST_SEED) cargo test --release -p taxi-core --test simulation soak -- --ignored --nocapture
endif
