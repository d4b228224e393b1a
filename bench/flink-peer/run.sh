#!/usr/bin/env bash
# Measures the Flink peer of the aggregate function (TaxiPeer.java) on this
# machine, for the README's Managed Service for Apache Flink sizing. Flink's
# jars come from PyPI (apache-flink-libraries: the jars PyFlink ships), fetched
# once into target/flink-peer; needs python3 with pip and a JDK 17.
#   SAMPLE       the TLC file (default: the bundled hour)
#   REPETITIONS  copies of it, a day apart in event time (default 30)
set -euo pipefail
cd "$(dirname "$0")/../.."
version=1.20.1
dir=target/flink-peer
sample=${SAMPLE:-../shared/data/yellow_tripdata_2015-01-10_0000-0100.csv.gz}
repetitions=${REPETITIONS:-30}
if [ ! -d "$dir/lib" ]; then
  echo "fetching Flink $version's jars from PyPI (about 230 MB, once)" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps "apache-flink-libraries==$version" -d "$dir/download"
  tar -xzf "$dir/download/apache-flink-libraries-$version.tar.gz" -C "$dir/download"
  mv "$dir/download/apache-flink-libraries-$version/deps/lib" "$dir/lib"
  rm -rf "$dir/download"
fi
javac -XDsuppressNotes -cp "$dir/lib/*" -d "$dir/classes" bench/flink-peer/TaxiPeer.java
# Flink logs its start-up on stderr; kept in a file, shown if the run fails.
if ! java -cp "$dir/lib/*:$dir/classes" TaxiPeer "$sample" "$repetitions" 2>"$dir/run.log" | grep '^flink peer:'; then
  tail -20 "$dir/run.log" >&2
  exit 1
fi
