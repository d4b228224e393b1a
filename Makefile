# The two set-up commands of the README, plus benchmarks.
#   make demo   the main job: the bundled real sample through the aggregate function into DynamoDB Local
#   make test   every test: format, lints, unit, property and integration tests against the stand-ins
#   make bench  the benchmarks of docs/BENCHMARKS.md

.PHONY: demo test bench standins

# Local stand-ins: DynamoDB Local and kinesis-local pinned by package.json / package-lock.json
# (they run on the machine's Java and Node.js), osmem-server pinned by requirements-standins.txt.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

target/.standins-pip: requirements-standins.txt
	python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-standins.txt
	mkdir -p target && touch $@

standins: node_modules/.package-lock.json target/.standins-pip
	@command -v java >/dev/null || { echo "java is needed for DynamoDB Local (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v node >/dev/null || { echo "node is needed for kinesis-local (apt-get install nodejs)" >&2; exit 1; }

# INPUT=path/to/tlc.csv[.gz] replays another TLC file instead of the bundled sample.
demo: standins
	cargo run --release -p taxi-integration-tests --example aggregate_sample $(if $(INPUT),-- --input $(INPUT))

test: standins
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build -q -p taxi-standins
	target/debug/taxi-standins cargo nextest run --workspace --no-fail-fast

bench: standins
	cargo bench -p taxi-core --bench preaggregate
	cargo build -q -p taxi-standins
	target/debug/taxi-standins cargo bench -p taxi-integration-tests --bench dynamodb_writes --bench close_latency
	cargo bench -p taxi-pipeline --bench replay
