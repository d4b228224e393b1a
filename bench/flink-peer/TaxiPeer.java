// The Flink peer of the aggregate function, for sizing Managed Service for
// Apache Flink (README, "Against the cluster it replaces"): the same job on
// one task slot and parallelism 1 (one KPU is one vCPU), measured in records
// per second.
//
// The job: decode each record of the pipeline's event format (JSON), validate
// it (the city box, 0 < duration <= 4 h), pre-aggregate hot spots per geohash-6
// cell and trips to JFK / LGA per cell and overall, in 10-minute tumbling
// event-time windows with a 10-minute bounded out-of-orderness watermark, and
// emit one (count, duration sum) per key and window. Kinesis and the search
// sink are left out on both sides (no connector here); the input is the
// bundled sample, its event times shifted by a day per repetition, encoded to
// JSON before the clock starts.
//
// Usage: bench/flink-peer/run.sh (or java -cp <flink jars>:<classes> TaxiPeer <sample.csv.gz> <repetitions>)

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPInputStream;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.DiscardingSink;
import org.apache.flink.streaming.api.functions.source.SourceFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.util.Collector;

public class TaxiPeer {
    /** The encoded input, shared with the source in this JVM (local execution). */
    static volatile List<String> events = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        int repetitions = Integer.parseInt(args[1]);
        List<String[]> trips = readTrips(args[0]);
        List<String> all = new ArrayList<>();
        for (int r = 0; r < repetitions; r++) {
            for (String[] t : trips) {
                all.add(encode(t, r));
            }
        }
        // The first run warms the JVM up and measures the job's start-up; the
        // second one's extra records over its extra time is the throughput.
        List<String> one = all.subList(0, trips.size());
        double warm = run(one);
        double full = run(all);
        System.out.printf("flink peer: %d records in %.2f s, %d in %.2f s: %.0f records/s on parallelism 1, net of start-up%n",
            one.size(), warm, all.size(), full, (all.size() - one.size()) / (full - warm));
    }

    static double run(List<String> input) throws Exception {
        events = input;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        env.addSource(new Replay())
            .flatMap(new Decode())
            .assignTimestampsAndWatermarks(
                WatermarkStrategy.<Tuple3<String, Long, Long>>forBoundedOutOfOrderness(Duration.ofMinutes(10))
                    .withTimestampAssigner((e, previous) -> e.f2))
            .keyBy(e -> e.f0)
            .window(TumblingEventTimeWindows.of(Duration.ofMinutes(10)))
            .aggregate(new CountAndSum())
            .addSink(new DiscardingSink<>());
        long started = System.nanoTime();
        env.execute("taxi-peer");
        return (System.nanoTime() - started) / 1e9;
    }

    static final DateTimeFormatter TLC = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss");
    static final ZoneId NEW_YORK = ZoneId.of("America/New_York");

    /** pickup time, dropoff time (UTC ISO), pickup lat, lon, dropoff lat, lon. */
    static List<String[]> readTrips(String path) throws Exception {
        List<String[]> trips = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(
                new GZIPInputStream(new FileInputStream(path)), StandardCharsets.UTF_8))) {
            String[] header = in.readLine().split(",");
            int pu = index(header, "tpep_pickup_datetime"), dr = index(header, "tpep_dropoff_datetime");
            int plon = index(header, "pickup_longitude"), plat = index(header, "pickup_latitude");
            int dlon = index(header, "dropoff_longitude"), dlat = index(header, "dropoff_latitude");
            for (String line; (line = in.readLine()) != null; ) {
                String[] f = line.split(",");
                trips.add(new String[] {f[pu], f[dr], f[plat], f[plon], f[dlat], f[dlon]});
            }
        }
        return trips;
    }

    static int index(String[] header, String name) {
        for (int i = 0; i < header.length; i++) {
            if (header[i].trim().equals(name)) {
                return i;
            }
        }
        throw new IllegalArgumentException("no column " + name);
    }

    static String encode(String[] t, int day) {
        String pickup = LocalDateTime.parse(t[0], TLC).plusDays(day).atZone(NEW_YORK).toInstant().toString();
        String dropoff = LocalDateTime.parse(t[1], TLC).plusDays(day).atZone(NEW_YORK).toInstant().toString();
        return "{\"type\":\"trip\",\"pickup_datetime\":\"" + pickup + "\",\"dropoff_datetime\":\"" + dropoff
            + "\",\"pickup_lat\":" + t[2] + ",\"pickup_lon\":" + t[3]
            + ",\"dropoff_lat\":" + t[4] + ",\"dropoff_lon\":" + t[5] + "}";
    }

    static class Replay implements SourceFunction<String> {
        private volatile boolean running = true;

        @Override
        public void run(SourceContext<String> ctx) {
            for (String event : events) {
                if (!running) {
                    return;
                }
                ctx.collect(event);
            }
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    /** (metric key, duration s, event time ms) per metric a valid trip feeds. */
    static class Decode implements FlatMapFunction<String, Tuple3<String, Long, Long>> {
        private transient ObjectMapper json;

        @Override
        public void flatMap(String record, Collector<Tuple3<String, Long, Long>> out) throws Exception {
            if (json == null) {
                json = new ObjectMapper();
            }
            JsonNode e = json.readTree(record);
            if (!"trip".equals(e.path("type").asText())) {
                return;
            }
            long pickup = java.time.Instant.parse(e.get("pickup_datetime").asText()).toEpochMilli();
            long dropoff = java.time.Instant.parse(e.get("dropoff_datetime").asText()).toEpochMilli();
            double plat = e.get("pickup_lat").asDouble(), plon = e.get("pickup_lon").asDouble();
            double dlat = e.get("dropoff_lat").asDouble(), dlon = e.get("dropoff_lon").asDouble();
            long duration = (dropoff - pickup) / 1000;
            if (!inBox(plat, plon, 40.4774, 40.9176, -74.2591, -73.7004)
                    || !inBox(dlat, dlon, 40.4774, 40.9176, -74.2591, -73.7004)
                    || duration <= 0 || duration > 4 * 3600) {
                return;
            }
            String cell = geohash(plat, plon, 6);
            out.collect(Tuple3.of("pickups#" + cell, duration, dropoff));
            String airport = inBox(dlat, dlon, 40.632, 40.654, -73.800, -73.761) ? "JFK"
                : inBox(dlat, dlon, 40.766, 40.778, -73.881, -73.859) ? "LGA" : null;
            if (airport != null) {
                out.collect(Tuple3.of("airport_cell#" + airport + "#" + cell, duration, dropoff));
                out.collect(Tuple3.of("airport#" + airport, duration, dropoff));
            }
        }
    }

    static boolean inBox(double lat, double lon, double minLat, double maxLat, double minLon, double maxLon) {
        return lat >= minLat && lat <= maxLat && lon >= minLon && lon <= maxLon;
    }

    static final char[] BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz".toCharArray();

    static String geohash(double lat, double lon, int chars) {
        double[] la = {-90, 90}, lo = {-180, 180};
        StringBuilder out = new StringBuilder(chars);
        boolean even = true;
        int bit = 0, ch = 0;
        while (out.length() < chars) {
            double[] range = even ? lo : la;
            double value = even ? lon : lat;
            double mid = (range[0] + range[1]) / 2;
            ch <<= 1;
            if (value >= mid) {
                ch |= 1;
                range[0] = mid;
            } else {
                range[1] = mid;
            }
            even = !even;
            if (++bit == 5) {
                out.append(BASE32[ch]);
                bit = 0;
                ch = 0;
            }
        }
        return out.toString();
    }

    static class CountAndSum implements AggregateFunction<Tuple3<String, Long, Long>, Tuple2<Long, Long>, Tuple2<Long, Long>> {
        @Override
        public Tuple2<Long, Long> createAccumulator() {
            return Tuple2.of(0L, 0L);
        }

        @Override
        public Tuple2<Long, Long> add(Tuple3<String, Long, Long> e, Tuple2<Long, Long> acc) {
            return Tuple2.of(acc.f0 + 1, acc.f1 + e.f1);
        }

        @Override
        public Tuple2<Long, Long> getResult(Tuple2<Long, Long> acc) {
            return acc;
        }

        @Override
        public Tuple2<Long, Long> merge(Tuple2<Long, Long> a, Tuple2<Long, Long> b) {
            return Tuple2.of(a.f0 + b.f0, a.f1 + b.f1);
        }
    }
}
