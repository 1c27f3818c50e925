//! Runar side by side with what a user would otherwise pick, on 127.0.0.1, in one run.
//!
//! ```sh
//! cargo run --release --manifest-path bench/Cargo.toml              # everything, ~2 minutes
//! cargo run --release --manifest-path bench/Cargo.toml -- --quick   # shorter runs
//! cargo run --release --manifest-path bench/Cargo.toml -- --only unary,local
//! cargo run --release --manifest-path bench/Cargo.toml -- --only gateway
//! cargo run --release --manifest-path bench/Cargo.toml -- --only sealing
//! ```
//!
//! Prints a markdown table (progress goes to stderr). See BENCHMARKS.md for what each row
//! measures.

mod certs;
mod events;
mod gateway_side;
mod local;
mod memory;
mod nats_side;
mod pb;
mod quinn_framed;
mod quinn_side;
mod rpc;
mod rt;
mod runar_side;
mod scale;
mod sealing;
mod stats;
mod streams;
mod tarpc_side;
mod tonic_side;
mod zenoh_side;

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;

use rt::Rt;
use stats::{Latency, rate, ratio, us};
use zenoh_side::Link;

/// The systems compared on request/response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Quinn,
    /// Raw quinn with a Runar node's transport settings.
    QuinnRunarSettings,
    /// Raw quinn, every call a frame on one long-lived stream.
    QuinnFramed,
    Runar,
    TonicTls,
    TonicPlain,
    /// tonic's client → the gRPC gateway → a Runar service on the gateway's node.
    GatewayTls,
    GatewayPlain,
    /// Runar's echo of a record with labelled fields (`--only sealing`).
    Sealed(sealing::Variant),
    /// tarpc 0.38, bincode over plain TCP.
    Tarpc,
    /// zenoh 1.10 query/reply between two peer sessions over this link.
    ZenohQuery(Link),
}

impl System {
    const ALL: [System; 8] = [
        System::Quinn,
        System::QuinnFramed,
        System::Runar,
        System::TonicTls,
        System::TonicPlain,
        System::Tarpc,
        System::ZenohQuery(Link::Tcp),
        System::ZenohQuery(Link::Quic),
    ];

    /// The same echo of a record with no labelled field, one, and three under two labels.
    const SEALING: [System; 3] = [
        System::Sealed(sealing::Variant::Plain),
        System::Sealed(sealing::Variant::One),
        System::Sealed(sealing::Variant::Three),
    ];

    /// The gRPC gateway against tonic serving the same service directly.
    const GATEWAY: [System; 4] = [
        System::GatewayPlain,
        System::TonicPlain,
        System::GatewayTls,
        System::TonicTls,
    ];

    fn label(self) -> &'static str {
        match self {
            System::Quinn => "raw quinn (floor)",
            System::QuinnRunarSettings => "raw quinn, Runar's transport settings",
            System::QuinnFramed => "raw quinn, one framed stream",
            System::Runar => "**Runar**",
            System::TonicTls => "tonic + TLS",
            System::TonicPlain => "tonic plaintext",
            System::GatewayTls => "**gRPC gateway** + TLS → Runar",
            System::GatewayPlain => "**gRPC gateway** plaintext → Runar",
            System::Sealed(v) => v.label(),
            System::Tarpc => "tarpc 0.38 (bincode, plain TCP)",
            System::ZenohQuery(Link::Tcp) => "zenoh 1.10 query/reply, TCP",
            System::ZenohQuery(Link::Quic) => "zenoh 1.10 query/reply, QUIC",
        }
    }
}

struct Options {
    warmup: Duration,
    measure: Duration,
    /// Each network measurement is repeated this many times, the systems in a rotating order,
    /// and the table shows the median: on this 2-core VM the multi-thread runtime's numbers
    /// drift between runs, and rounds keep that drift from favouring one system.
    rounds: usize,
    sections: Vec<String>,
    profile: Option<String>,
    /// For `--profile`: a fixed number of calls instead of a duration (sequential, or 64 in
    /// flight for the `-64` profiles).
    calls: Option<u64>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(500),
            rounds: 3,
            sections: Vec::new(),
            profile: None,
            calls: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => {
                    options.warmup = Duration::from_millis(100);
                    options.measure = Duration::from_millis(400);
                    options.rounds = 1;
                }
                "--rounds" => {
                    options.rounds = args
                        .next()
                        .and_then(|s| s.parse().ok())
                        .filter(|&n| n > 0)
                        .expect("--rounds takes a positive number");
                }
                "--secs" => {
                    let secs: f64 = args
                        .next()
                        .and_then(|s| s.parse().ok())
                        .expect("--secs takes a number of seconds");
                    options.measure = Duration::from_secs_f64(secs);
                }
                "--only" => {
                    options.sections = args
                        .next()
                        .expect("--only takes a comma-separated list")
                        .split(',')
                        .map(str::to_owned)
                        .collect();
                }
                "--profile" => options.profile = args.next(),
                "--calls" => {
                    options.calls = Some(
                        args.next()
                            .and_then(|s| s.parse().ok())
                            .expect("--calls takes a number"),
                    );
                }
                "--help" | "-h" => {
                    println!(
                        "runar-bench [--quick] [--secs S] [--rounds N] \
                         [--only unary,local,events,streams,payload,memory,scale,gateway,sealing] \
                         [--profile SYSTEM-seq[-mt][:BYTES]|SYSTEM-64[-mt][:BYTES]|runar-events[-mt]|zenoh-events[-quic]|runar-pull[:N]|runar-push[:N]|tonic-pull|tonic-push] \
                         (SYSTEM: runar, quinn, quinn-runar, quinn-framed, tonic, tonic-plain, gateway, tarpc) \
                         [--calls N]"
                    );
                    std::process::exit(0);
                }
                other => panic!("unknown argument {other} (try --help)"),
            }
        }
        options
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

/// Connects a client of `system`, runs `measurement` with it, and stops what was started: the
/// one place that knows how to reach each request/response system.
async fn on_system<M: rpc::Measure>(system: System, measurement: M) -> M::Output {
    match system {
        System::Quinn => measurement.run(&quinn_side::connect().await).await,
        System::QuinnRunarSettings => {
            let r = quinn_side::connect_with(quinn_side::Settings::Runar).await;
            measurement.run(&r).await
        }
        System::QuinnFramed => measurement.run(&quinn_framed::connect().await).await,
        System::Runar => {
            let r = runar_side::connect().await;
            let out = measurement.run(&r).await;
            r.stop().await;
            out
        }
        System::TonicTls | System::TonicPlain => {
            let r = tonic_side::connect(system == System::TonicTls).await.0;
            measurement.run(&r).await
        }
        System::GatewayTls | System::GatewayPlain => {
            let r = gateway_side::connect(system == System::GatewayTls).await;
            let out = measurement.run(&r).await;
            r.stop().await;
            out
        }
        System::Sealed(v) => {
            let r = sealing::connect(v).await;
            let out = measurement.run(&r).await;
            r.stop().await;
            out
        }
        System::Tarpc => measurement.run(&tarpc_side::connect().await).await,
        System::ZenohQuery(link) => {
            let (r, hold) = zenoh_side::query(link).await;
            let out = measurement.run(&r).await;
            hold.stop(r).await;
            out
        }
    }
}

/// Sequential latency and 64-in-flight calls/s of `system` on `rt` with a 100-byte payload.
fn unary(system: System, rt: Rt, o: &Options) -> (Latency, f64) {
    progress(&format!("unary 100 B, {}, {}", system.label(), rt.label()));
    struct Both {
        payload: Bytes,
        warmup: Duration,
        measure: Duration,
    }
    impl rpc::Measure for Both {
        type Output = (Latency, f64);
        async fn run<R: rpc::Rpc>(&self, r: &R) -> (Latency, f64) {
            let (warmup, measure) = (self.warmup, self.measure);
            let seq = rpc::sequential(r, self.payload.clone(), warmup, measure).await;
            let par = rpc::concurrent(r, self.payload.clone(), 64, warmup, measure).await;
            (Latency::from(&seq), par)
        }
    }
    let both = Both {
        payload: Bytes::from(vec![0xA5u8; 100]),
        warmup: o.warmup,
        measure: o.measure,
    };
    rt.run(move || on_system(system, both))
}

/// [`unary`] for each of `systems` on `rt`, `o.rounds` times with the systems in rotating
/// order: each system's median latency and median 64-in-flight calls/s, in `systems`' order.
fn unary_rounds(systems: &[System], rt: Rt, o: &Options) -> Vec<(System, Latency, f64)> {
    let runs = rotate(systems, o, |s| unary(s, rt, o));
    systems
        .iter()
        .zip(runs)
        .map(|(&s, r)| {
            let lat = median_latency(r.iter().map(|x| x.0));
            (s, lat, median(r.iter().map(|x| x.1)))
        })
        .collect()
}

/// One table row per result of [`unary_rounds`].
fn unary_rows(out: &mut String, rt: Rt, results: &[(System, Latency, f64)]) {
    for (s, lat, par) in results {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            rt.label(),
            s.label(),
            us(lat.p50),
            us(lat.p90),
            us(lat.p99),
            rate(lat.per_sec),
            rate(*par)
        )
        .unwrap();
    }
}

/// Sequential round trips of each payload size: (size, p50 µs, MiB/s of payload each way).
fn sweep(system: System, rt: Rt, sizes: &[usize], o: &Options) -> Vec<(usize, f64, f64)> {
    progress(&format!(
        "payload sweep, {}, {}",
        system.label(),
        rt.label()
    ));
    struct Each {
        sizes: Vec<usize>,
        warmup: Duration,
        measure: Duration,
    }
    impl rpc::Measure for Each {
        type Output = Vec<(usize, f64, f64)>;
        async fn run<R: rpc::Rpc>(&self, r: &R) -> Vec<(usize, f64, f64)> {
            let mut out = Vec::new();
            for &size in &self.sizes {
                let payload = Bytes::from(vec![0xA5u8; size]);
                let s = rpc::sequential(r, payload, self.warmup, self.measure).await;
                let mib_s = s.per_sec() * size as f64 / f64::from(1 << 20);
                out.push((size, s.quantile_us(0.5), mib_s));
            }
            out
        }
    }
    let each = Each {
        sizes: sizes.to_vec(),
        warmup: o.warmup / 2,
        measure: o.measure / 2,
    };
    rt.run(move || on_system(system, each))
}

/// The systems compared on remote events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventSystem {
    Runar,
    TonicStreaming,
    /// zenoh 1.10 pub/sub between two peer sessions over this link.
    Zenoh(Link),
}

impl EventSystem {
    const ALL: [EventSystem; 4] = [
        EventSystem::Runar,
        EventSystem::TonicStreaming,
        EventSystem::Zenoh(Link::Tcp),
        EventSystem::Zenoh(Link::Quic),
    ];

    fn label(self) -> &'static str {
        match self {
            EventSystem::Runar => "**Runar** publish/subscribe",
            EventSystem::TonicStreaming => "tonic + TLS server streaming",
            EventSystem::Zenoh(Link::Tcp) => "zenoh 1.10 pub/sub, TCP",
            EventSystem::Zenoh(Link::Quic) => "zenoh 1.10 pub/sub, QUIC",
        }
    }
}

/// Remote events, 64-byte payload, of `system` on `rt`: latency and throughput.
fn remote_events(system: EventSystem, rt: Rt, o: &Options) -> (Latency, events::Throughput) {
    progress(&format!("events 64 B, {}, {}", system.label(), rt.label()));
    let (warmup, measure) = (o.warmup, o.measure);
    let payload = Bytes::from(vec![0x5Au8; 64]);
    rt.run(move || async move {
        async fn both<P: events::Publisher>(
            p: &P,
            sink: &events::Sink,
            payload: Bytes,
            warmup: Duration,
            measure: Duration,
        ) -> (Latency, events::Throughput) {
            let lat = events::latency(p, sink, payload.clone(), warmup, measure).await;
            let tput = events::throughput(p, sink, payload, warmup, measure).await;
            (Latency::from(&lat), tput)
        }
        let sink = events::Sink::default();
        match system {
            EventSystem::Runar => {
                let r = runar_side::connect().await;
                r.subscribe(sink.clone()).await;
                let out = both(&r, &sink, payload, warmup, measure).await;
                r.stop().await;
                out
            }
            EventSystem::TonicStreaming => {
                let (client, mut publisher) = tonic_side::connect(true).await;
                publisher.subscribe(&client, sink.clone()).await;
                both(&publisher, &sink, payload, warmup, measure).await
            }
            EventSystem::Zenoh(link) => {
                let z = zenoh_side::pubsub(link, sink.clone()).await;
                let out = both(&z, &sink, payload, warmup, measure).await;
                z.stop().await;
                out
            }
        }
    })
}

/// Calls `measure` for each of `systems`, `o.rounds` times with the systems in rotating order
/// (so that drift of the machine's speed favours none): every result of each system, in
/// `systems`' order.
fn rotate<S: Copy, T>(systems: &[S], o: &Options, mut measure: impl FnMut(S) -> T) -> Vec<Vec<T>> {
    let n = systems.len();
    let mut runs: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for k in 0..n {
            let i = (k + round) % n;
            runs[i].push(measure(systems[i]));
        }
    }
    runs
}

/// The `stream_buffer` of the second Runar column of the streaming table.
const LARGE_STREAM_BUFFER: usize = 4096;

/// Streaming rpcs, 64-byte messages: messages/s of one `kind` call: tonic + TLS (`None`), or
/// Runar with the default `stream_buffer` (`Some(None)`) or another (`Some(Some(n))`).
fn stream_rate(kind: streams::Kind, runar: Option<Option<usize>>, rt: Rt, o: &Options) -> f64 {
    let name = match runar {
        None => "tonic + TLS".to_owned(),
        Some(None) => "Runar".to_owned(),
        Some(Some(n)) => format!("Runar, stream_buffer {n}"),
    };
    progress(&format!("{} 64 B, {name}, {}", kind.label(), rt.label()));
    let (warmup, measure) = (o.warmup, o.measure);
    rt.run(move || async move {
        match runar {
            Some(buffer) => {
                let r = streams::runar(buffer).await;
                let x = streams::rate(&r, kind, warmup, measure).await;
                r.stop().await;
                x
            }
            None => {
                let (client, _) = tonic_side::connect(true).await;
                streams::rate(&client, kind, warmup, measure).await
            }
        }
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Each field's median over the rounds.
fn median_latency(runs: impl Iterator<Item = Latency> + Clone) -> Latency {
    Latency {
        p50: median(runs.clone().map(|l| l.p50)),
        p90: median(runs.clone().map(|l| l.p90)),
        p99: median(runs.clone().map(|l| l.p99)),
        per_sec: median(runs.map(|l| l.per_sec)),
    }
}

/// The reference and ratio cells of a rate of Runar's against zenoh's (`name`) over TCP and
/// over QUIC.
fn against_zenoh(name: &str, runar: f64, tcp: f64, quic: f64) -> (String, String) {
    (
        format!("{name} over TCP: {}; over QUIC: {}", rate(tcp), rate(quic)),
        format!("{} / {}", ratio(runar / tcp), ratio(runar / quic)),
    )
}

/// The figures of issue 14's table, filled in by the sections that ran (index 0: the
/// current-thread runtime, 1: the multi-thread one), printed side by side with their references
/// from the same run.
#[derive(Default)]
struct Issue14 {
    unary: [Vec<(System, Latency, f64)>; 2],
    events: [Vec<(EventSystem, Latency, events::Throughput)>; 2],
    /// 1 MiB sequential echo, MiB/s: (Runar, tonic + TLS).
    mib: [Option<(f64, f64)>; 2],
}

impl Issue14 {
    fn unary(&self, r: usize, s: System) -> Option<(Latency, f64)> {
        self.unary[r].iter().find(|x| x.0 == s).map(|x| (x.1, x.2))
    }

    fn events(&self, r: usize, s: EventSystem) -> Option<f64> {
        self.events[r]
            .iter()
            .find(|x| x.0 == s)
            .map(|x| x.2.per_sec)
    }

    /// The table, in the issue's row order, each row for both runtimes; rows whose section did
    /// not run are left out.
    fn write(&self, out: &mut String) {
        let mut rows = String::new();
        let mut row = |what: &str, rt: Rt, runar: String, reference: String, ratio: String| {
            writeln!(
                rows,
                "| {what}, {} | {runar} | {reference} | {ratio} |",
                rt.label()
            )
            .unwrap();
        };
        type Pick = fn(&(Latency, f64)) -> f64;
        type Show = fn(f64) -> String;
        let unary_rows: [(&str, System, &str, Pick, Show); 5] = [
            (
                "unary p50",
                System::Quinn,
                "raw quinn, stream per call",
                |x| x.0.p50,
                |x| format!("{} µs", us(x)),
            ),
            (
                "unary calls/s, 64 in flight",
                System::Quinn,
                "raw quinn, stream per call",
                |x| x.1,
                rate,
            ),
            (
                "unary calls/s, 64 in flight",
                System::QuinnFramed,
                "raw quinn, one framed stream",
                |x| x.1,
                rate,
            ),
            (
                "unary calls/s, 64 in flight",
                System::Tarpc,
                "tarpc 0.38 (bincode, plain TCP)",
                |x| x.1,
                rate,
            ),
            (
                "unary p50",
                System::Tarpc,
                "tarpc 0.38",
                |x| x.0.p50,
                |x| format!("{} µs", us(x)),
            ),
        ];
        for (i, (what, reference, name, pick, show)) in unary_rows.iter().enumerate() {
            if i == 3 {
                self.events_rows(&mut row);
            }
            for (r, rt) in Rt::BOTH.into_iter().enumerate() {
                let (Some(runar), Some(other)) =
                    (self.unary(r, System::Runar), self.unary(r, *reference))
                else {
                    continue;
                };
                let (a, b) = (pick(&runar), pick(&other));
                row(
                    what,
                    rt,
                    show(a),
                    format!("{name}: {}", show(b)),
                    ratio(a / b),
                );
            }
        }
        for (r, rt) in Rt::BOTH.into_iter().enumerate() {
            let (Some(runar), Some(tcp), Some(quic)) = (
                self.unary(r, System::Runar),
                self.unary(r, System::ZenohQuery(Link::Tcp)),
                self.unary(r, System::ZenohQuery(Link::Quic)),
            ) else {
                continue;
            };
            let (reference, ratios) = against_zenoh("zenoh query/reply", runar.1, tcp.1, quic.1);
            row(
                "unary calls/s, 64 in flight (not in the issue)",
                rt,
                rate(runar.1),
                reference,
                ratios,
            );
        }
        if rows.is_empty() {
            return;
        }
        writeln!(
            out,
            "### Issue 14's table from this run\n\n\
             Runar's figure and its reference from the same run (medians of the rounds); \
             ratio = Runar / reference.\n"
        )
        .unwrap();
        writeln!(
            out,
            "| measurement | Runar | reference in the same run | ratio |"
        )
        .unwrap();
        writeln!(out, "|---|---:|---:|---:|").unwrap();
        out.push_str(&rows);
        out.push('\n');
    }

    /// The events rows and the 1 MiB row, which sit in the middle of the issue's table.
    fn events_rows(&self, row: &mut impl FnMut(&str, Rt, String, String, String)) {
        for (r, rt) in Rt::BOTH.into_iter().enumerate() {
            let (Some(runar), Some(tcp), Some(quic)) = (
                self.events(r, EventSystem::Runar),
                self.events(r, EventSystem::Zenoh(Link::Tcp)),
                self.events(r, EventSystem::Zenoh(Link::Quic)),
            ) else {
                continue;
            };
            let (reference, ratios) = against_zenoh("zenoh 1.10", runar, tcp, quic);
            row(
                "remote events 64 B, msgs/s",
                rt,
                rate(runar),
                reference,
                ratios,
            );
        }
        for (r, rt) in Rt::BOTH.into_iter().enumerate() {
            let (Some(runar), Some(tonic)) = (
                self.events(r, EventSystem::Runar),
                self.events(r, EventSystem::TonicStreaming),
            ) else {
                continue;
            };
            row(
                "remote events 64 B, msgs/s",
                rt,
                rate(runar),
                format!("tonic server streaming: {}", rate(tonic)),
                ratio(runar / tonic),
            );
        }
        for (r, rt) in Rt::BOTH.into_iter().enumerate() {
            let Some((runar, tonic)) = self.mib[r] else {
                continue;
            };
            row(
                "1 MiB echo MiB/s",
                rt,
                format!("{runar:.0}"),
                format!("tonic + TLS: {tonic:.0}"),
                ratio(runar / tonic),
            );
        }
    }
}

/// Runs one scenario for a long time, for `perf record`/callgrind.
/// Runs a request/response profile (see [`ProfiledCall`]) and prints its figure.
fn profile_call(which: &str, call: ProfiledCall, o: &Options) {
    let rt = if call.multi_thread {
        Rt::Multi
    } else {
        Rt::Current
    };
    // `--calls N`: exactly N calls (64 in flight: a multiple of 64), for instruction
    // counts that do not depend on how fast the profiler runs; else calls for `--secs`.
    struct Profile {
        payload: Bytes,
        in_flight: bool,
        calls: Option<u64>,
        measure: Duration,
    }
    impl rpc::Measure for Profile {
        /// The p50 in ns (sequential) or the calls/s (64 in flight).
        type Output = f64;
        async fn run<R: rpc::Rpc>(&self, r: &R) -> f64 {
            let payload = self.payload.clone();
            let out = match (self.in_flight, self.calls) {
                (false, Some(n)) => rpc::fixed(r, payload, n).await.quantile_us(0.5) * 1e3,
                (false, None) => {
                    rpc::sequential(r, payload, Duration::ZERO, self.measure)
                        .await
                        .quantile_us(0.5)
                        * 1e3
                }
                (true, Some(n)) => {
                    let start = std::time::Instant::now();
                    let made = rpc::concurrent_fixed(r, payload, 64, n).await;
                    made as f64 / start.elapsed().as_secs_f64()
                }
                (true, None) => rpc::concurrent(r, payload, 64, Duration::ZERO, self.measure).await,
            };
            r.report();
            out
        }
    }
    let profile = Profile {
        payload: Bytes::from(vec![0xA5u8; call.size]),
        in_flight: call.in_flight,
        calls: o.calls,
        measure: o.measure,
    };
    let x = rt.run(move || on_system(call.system, profile));
    let what = if call.in_flight { "calls/s" } else { "p50 ns" };
    println!("{which}: {what} {x:.0}");
}

/// A request/response profile: `SYSTEM-seq` (sequential round trips) or `SYSTEM-64` (64 in
/// flight), `-mt` for the multi-thread runtime, `:BYTES` for another payload than 100 bytes;
/// SYSTEM is `runar`, `quinn`, `quinn-runar` (raw quinn with Runar's transport settings),
/// `quinn-framed`, `tonic`, `tonic-plain`, `gateway` (plaintext) or `tarpc`.
struct ProfiledCall {
    system: System,
    in_flight: bool,
    multi_thread: bool,
    size: usize,
}

impl ProfiledCall {
    fn parse(profile: &str) -> Option<ProfiledCall> {
        let (name, size) = match profile.split_once(':') {
            Some((name, n)) => (name, n.parse().ok()?),
            None => (profile, 100),
        };
        let multi_thread = name.ends_with("-mt");
        let name = name.trim_end_matches("-mt");
        let (system, in_flight) = match name.rsplit_once('-')? {
            (system, "seq") => (system, false),
            (system, "64") => (system, true),
            _ => return None,
        };
        let system = match system {
            "runar" => System::Runar,
            "quinn" => System::Quinn,
            "quinn-runar" => System::QuinnRunarSettings,
            "quinn-framed" => System::QuinnFramed,
            "tonic" => System::TonicTls,
            "tonic-plain" => System::TonicPlain,
            "gateway" => System::GatewayPlain,
            "tarpc" => System::Tarpc,
            _ => return None,
        };
        Some(ProfiledCall {
            system,
            in_flight,
            multi_thread,
            size,
        })
    }
}

fn profile(which: &str, o: &Options) {
    if let Some(call) = ProfiledCall::parse(which) {
        return profile_call(which, call, o);
    }
    let measure = o.measure;
    let report = |what: &str, x: f64| println!("{which}: {what} {x:.0}");
    match which {
        "zenoh-events" | "zenoh-events-quic" => {
            let link = if which.ends_with("quic") {
                Link::Quic
            } else {
                Link::Tcp
            };
            let calls = o.calls;
            let x = Rt::Current.run(move || async move {
                let sink = events::Sink::default();
                let z = zenoh_side::pubsub(link, sink.clone()).await;
                let payload = Bytes::from(vec![0x5Au8; 64]);
                let x = match calls {
                    Some(n) => events::fixed(&z, &sink, payload, n).await,
                    None => {
                        events::throughput(&z, &sink, payload, Duration::ZERO, measure)
                            .await
                            .per_sec
                    }
                };
                z.stop().await;
                x
            });
            report("events/s", x);
        }
        "runar-events" | "runar-events-mt" => {
            let calls = o.calls;
            let rt = if which.ends_with("-mt") {
                Rt::Multi
            } else {
                Rt::Current
            };
            let x = rt.run(move || async move {
                let sink = events::Sink::default();
                let r = runar_side::connect().await;
                r.subscribe(sink.clone()).await;
                let payload = Bytes::from(vec![0x5Au8; 64]);
                match calls {
                    Some(n) => events::fixed(&r, &sink, payload, n).await,
                    None => {
                        events::throughput(&r, &sink, payload, Duration::ZERO, measure)
                            .await
                            .per_sec
                    }
                }
            });
            report("events/s", x);
        }
        w if w.starts_with("tonic-pull") || w.starts_with("tonic-push") => {
            // tonic + TLS, for the per-message cost of the runar-pull/runar-push profiles;
            // `-mt` runs it on the multi-thread runtime.
            let rt = if w.ends_with("-mt") {
                Rt::Multi
            } else {
                Rt::Current
            };
            let kind = if w.starts_with("tonic-pull") {
                streams::Kind::Server
            } else {
                streams::Kind::Client
            };
            let n = o.calls.unwrap_or(1_000_000);
            let x = rt.run(move || async move {
                let (client, _) = tonic_side::connect(true).await;
                let start = std::time::Instant::now();
                streams::Streamer::run(&client, kind, n, Bytes::from(vec![0x5Au8; 64])).await;
                n as f64 / start.elapsed().as_secs_f64()
            });
            report("messages/s", x);
        }
        w if w.starts_with("runar-pull") || w.starts_with("runar-push") => {
            // `runar-pull:N` sets `stream_buffer` to N; `-mt` runs it on the multi-thread
            // runtime (`runar-pull-mt:N`).
            let rt = if w.contains("-mt") {
                Rt::Multi
            } else {
                Rt::Current
            };
            let buffer = w.split_once(':').and_then(|(_, n)| n.parse().ok());
            let kind = if w.starts_with("runar-pull") {
                streams::Kind::Server
            } else {
                streams::Kind::Client
            };
            let n = o.calls.unwrap_or(1_000_000);
            let x = rt.run(move || async move {
                let r = streams::runar(buffer).await;
                let start = std::time::Instant::now();
                streams::Streamer::run(&r, kind, n, Bytes::from(vec![0x5Au8; 64])).await;
                let x = n as f64 / start.elapsed().as_secs_f64();
                r.stop().await;
                x
            });
            report("messages/s", x);
        }
        other => panic!("unknown profile scenario {other}"),
    }
}

fn main() {
    // tarpc and zenoh (through quinn's `log`) turn on tracing's `log` feature for every crate
    // of this build. With no subscriber set, that feature sends each span, enabled or not,
    // through the `log` crate (~750 instructions per Runar call, more in quinn): a cost no
    // system pays in its own build. A subscriber that records nothing turns it off.
    tracing::dispatcher::set_global_default(tracing::Dispatch::none())
        .expect("the first subscriber set");
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--child" && args[2] == "mem" {
        memory::child(&args[3]);
        return;
    }
    if args.len() == 5 && args[1] == "--child" && args[2] == "scale" {
        scale::child(args[3].parse().expect("a node count"), &args[4]);
        return;
    }
    let o = Options::parse();
    if let Some(which) = o.profile.clone() {
        profile(&which, &o);
        return;
    }
    let started = std::time::Instant::now();
    let mut out = String::new();
    let mut targets: Vec<(String, bool, String)> = Vec::new();
    let mut issue14 = Issue14::default();

    writeln!(
        out,
        "Measured on 127.0.0.1, {} cores, release build, by \
         `cargo run --release --manifest-path bench/Cargo.toml`. Network rows: the median of {} \
         rounds of {:.1} s (systems in rotating order), after {:.1} s of warm-up each.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.rounds,
        o.measure.as_secs_f64(),
        o.warmup.as_secs_f64()
    )
    .unwrap();

    if o.wants("unary") {
        writeln!(out, "### 1. Unary request/response, 100-byte payload\n").unwrap();
        writeln!(
            out,
            "| runtime | system | p50 µs | p90 µs | p99 µs | sequential calls/s | 64 in flight calls/s |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|").unwrap();
        let mut ratios = String::new();
        let mut others = String::new();
        for (r, rt) in Rt::BOTH.into_iter().enumerate() {
            let results = unary_rounds(&System::ALL, rt, &o);
            unary_rows(&mut out, rt, &results);
            let get = |sys: System| {
                results
                    .iter()
                    .find(|(s, _, _)| *s == sys)
                    .map(|(_, l, p)| (*l, *p))
                    .expect("measured")
            };
            let (runar, runar_par) = get(System::Runar);
            let (quinn, _) = get(System::Quinn);
            let (tls, tls_par) = get(System::TonicTls);
            for other in [
                System::Tarpc,
                System::ZenohQuery(Link::Tcp),
                System::ZenohQuery(Link::Quic),
            ] {
                let (lat, par) = get(other);
                writeln!(
                    others,
                    "| {} | {} | {} | {} | {} |",
                    rt.label(),
                    other.label(),
                    ratio(runar.p50 / lat.p50),
                    ratio(runar.per_sec / lat.per_sec),
                    ratio(runar_par / par)
                )
                .unwrap();
            }
            let (_, tarpc_par) = get(System::Tarpc);
            targets.push((
                format!("Runar 64-in-flight calls/s ≥ tarpc ({})", rt.label()),
                runar_par >= tarpc_par,
                format!(
                    "{} vs {} = {}",
                    rate(runar_par),
                    rate(tarpc_par),
                    ratio(runar_par / tarpc_par)
                ),
            ));
            issue14.unary[r] = results.clone();
            let p50_ratio = runar.p50 / quinn.p50;
            let seq_ratio = runar.per_sec / tls.per_sec;
            let par_ratio = runar_par / tls_par;
            writeln!(
                ratios,
                "| {} | {} | {} | {} |",
                rt.label(),
                ratio(p50_ratio),
                ratio(seq_ratio),
                ratio(par_ratio)
            )
            .unwrap();
            targets.push((
                format!("Runar p50 ≤ 1.3x raw quinn ({})", rt.label()),
                p50_ratio <= 1.3,
                format!(
                    "{} µs vs {} µs = {}",
                    us(runar.p50),
                    us(quinn.p50),
                    ratio(p50_ratio)
                ),
            ));
            targets.push((
                format!("Runar sequential calls/s ≥ tonic+TLS ({})", rt.label()),
                seq_ratio >= 1.0,
                format!(
                    "{} vs {} = {}",
                    rate(runar.per_sec),
                    rate(tls.per_sec),
                    ratio(seq_ratio)
                ),
            ));
            targets.push((
                format!("Runar 64-in-flight calls/s ≥ tonic+TLS ({})", rt.label()),
                par_ratio >= 1.0,
                format!(
                    "{} vs {} = {}",
                    rate(runar_par),
                    rate(tls_par),
                    ratio(par_ratio)
                ),
            ));
        }
        writeln!(
            out,
            "\n| runtime | Runar p50 / raw quinn p50 | Runar / tonic+TLS, sequential calls/s | Runar / tonic+TLS, 64 in flight calls/s |"
        )
        .unwrap();
        writeln!(out, "|---|---:|---:|---:|").unwrap();
        out.push_str(&ratios);
        writeln!(
            out,
            "\n| runtime | against | Runar p50 / its p50 | Runar / it, sequential calls/s | Runar / it, 64 in flight calls/s |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|").unwrap();
        out.push_str(&others);
        out.push('\n');
    }

    if o.wants("local") {
        writeln!(
            out,
            "### 2. Local request through the node vs a direct call of the same async fn\n"
        )
        .unwrap();
        writeln!(
            out,
            "| runtime | direct call ns | `node.request` ns | added by the node ns |"
        )
        .unwrap();
        writeln!(out, "|---|---:|---:|---:|").unwrap();
        for rt in Rt::BOTH {
            progress(&format!("local request, {}", rt.label()));
            let (direct, node) = rt.run(|| local::measure(200_000, 9));
            let added = node - direct;
            writeln!(
                out,
                "| {} | {direct:.0} | {node:.0} | {added:.0} |",
                rt.label()
            )
            .unwrap();
            // Issue 14's goal: a local request adds at most 160 ns over a direct call.
            targets.push((
                format!("local request adds ≤ 160 ns ({})", rt.label()),
                added <= 160.0,
                format!("{added:.0} ns"),
            ));
        }
        out.push('\n');
    }

    if o.wants("events") {
        writeln!(
            out,
            "### 3. Remote events, 64-byte payload (publisher and subscriber on different nodes)\n"
        )
        .unwrap();
        writeln!(
            out,
            "| runtime | system | p50 µs | p90 µs | p99 µs | messages/s | lost | Runar / this, messages/s |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|").unwrap();
        for (r, rt) in Rt::BOTH.into_iter().enumerate() {
            let runs = rotate(&EventSystem::ALL, &o, |s| remote_events(s, rt, &o));
            let results: Vec<_> = EventSystem::ALL
                .iter()
                .zip(runs)
                .map(|(&s, runs)| {
                    let lat = median_latency(runs.iter().map(|x| x.0));
                    let tput = events::Throughput {
                        per_sec: median(runs.iter().map(|x| x.1.per_sec)),
                        // The worst round: nothing lost means nothing lost in any round.
                        lost: runs.iter().map(|x| x.1.lost).max().unwrap_or(0),
                    };
                    (s, lat, tput)
                })
                .collect();
            let runar = results
                .iter()
                .find(|x| x.0 == EventSystem::Runar)
                .map_or(f64::NAN, |x| x.2.per_sec);
            for (s, lat, tput) in &results {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    rt.label(),
                    s.label(),
                    us(lat.p50),
                    us(lat.p90),
                    us(lat.p99),
                    rate(tput.per_sec),
                    tput.lost,
                    ratio(runar / tput.per_sec)
                )
                .unwrap();
                if let EventSystem::Zenoh(Link::Tcp) = s {
                    targets.push((
                        format!("Runar events ≥ zenoh over TCP ({})", rt.label()),
                        runar >= tput.per_sec,
                        format!(
                            "{} vs {} = {}",
                            rate(runar),
                            rate(tput.per_sec),
                            ratio(runar / tput.per_sec)
                        ),
                    ));
                }
            }
            issue14.events[r] = results;
        }
        writeln!(out, "\n{}", nats_side::skipped()).unwrap();
        out.push('\n');
    }

    if o.wants("streams") {
        writeln!(
            out,
            "### 6. Streaming rpcs, 64-byte messages, one call (generated clients; Runar over QUIC between two nodes)\n"
        )
        .unwrap();
        writeln!(
            out,
            "| runtime | kind | **Runar** messages/s | tonic + TLS messages/s | Runar / tonic | Runar, `stream_buffer` {LARGE_STREAM_BUFFER}, messages/s | its / tonic |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|").unwrap();
        for rt in Rt::BOTH {
            for kind in streams::Kind::BOTH {
                let systems = [Some(None), None, Some(Some(LARGE_STREAM_BUFFER))];
                let mut runs: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
                for round in 0..o.rounds {
                    for i in 0..systems.len() {
                        let which = (i + round) % systems.len();
                        runs[which].push(stream_rate(kind, systems[which], rt, &o));
                    }
                }
                let [r, t, large] = [0, 1, 2].map(|i| median(runs[i].iter().copied()));
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    rt.label(),
                    kind.label(),
                    rate(r),
                    rate(t),
                    ratio(r / t),
                    rate(large),
                    ratio(large / t)
                )
                .unwrap();
                targets.push((
                    format!(
                        "Runar {} messages/s ≥ tonic+TLS ({})",
                        kind.label(),
                        rt.label()
                    ),
                    r >= t,
                    format!("{} vs {} = {}", rate(r), rate(t), ratio(r / t)),
                ));
            }
        }
        out.push('\n');
    }

    if o.wants("gateway") {
        writeln!(
            out,
            "### 7. gRPC gateway: tonic's client through `runar-grpc` to a Runar service on the \
             gateway's node, vs tonic serving the same service, 100-byte payload\n"
        )
        .unwrap();
        writeln!(
            out,
            "| runtime | system | p50 µs | p90 µs | p99 µs | sequential calls/s | 64 in flight calls/s |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|").unwrap();
        let mut ratios = String::new();
        for rt in Rt::BOTH {
            let results = unary_rounds(&System::GATEWAY, rt, &o);
            unary_rows(&mut out, rt, &results);
            let get = |sys: System| {
                results
                    .iter()
                    .find(|(s, _, _)| *s == sys)
                    .map(|(_, l, p)| (*l, *p))
                    .expect("measured")
            };
            for (transport, gateway, direct) in [
                ("plaintext", System::GatewayPlain, System::TonicPlain),
                ("TLS", System::GatewayTls, System::TonicTls),
            ] {
                let ((g, g_par), (d, d_par)) = (get(gateway), get(direct));
                writeln!(
                    ratios,
                    "| {} | {transport} | {} | {} | {} |",
                    rt.label(),
                    ratio(g.p50 / d.p50),
                    ratio(g.per_sec / d.per_sec),
                    ratio(g_par / d_par)
                )
                .unwrap();
            }
        }
        writeln!(
            out,
            "\n| runtime | transport | gateway p50 / tonic p50 | gateway / tonic, sequential calls/s | gateway / tonic, 64 in flight calls/s |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|").unwrap();
        out.push_str(&ratios);
        out.push('\n');
    }

    if o.wants("sealing") {
        sealing_section(&mut out, &o);
    }

    if o.wants("payload") {
        let sizes = [100usize, 10 << 10, 1 << 20];
        let size_label = |s: usize| match s {
            100 => "100 B".to_string(),
            s if s < 1 << 20 => format!("{} KiB", s >> 10),
            s => format!("{} MiB", s >> 20),
        };
        writeln!(
            out,
            "### 4. Payload sweep: sequential echo round trips, MiB/s of payload (p50 µs)\n"
        )
        .unwrap();
        writeln!(
            out,
            "| runtime | payload | raw quinn, quinn's defaults | raw quinn, Runar's transport settings | **Runar** | tonic + TLS | Runar / quinn (Runar's settings) | Runar / tonic+TLS |"
        )
        .unwrap();
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|").unwrap();
        for rt in Rt::BOTH {
            let systems = [
                System::Quinn,
                System::QuinnRunarSettings,
                System::Runar,
                System::TonicTls,
            ];
            let mut runs: Vec<Vec<Vec<(usize, f64, f64)>>> = vec![Vec::new(); systems.len()];
            for round in 0..o.rounds {
                for k in 0..systems.len() {
                    let i = (k + round) % systems.len();
                    runs[i].push(sweep(systems[i], rt, &sizes, &o));
                }
            }
            // Per system and size: the median p50 and the median MiB/s.
            let summary = |runs: &Vec<Vec<(usize, f64, f64)>>| -> Vec<(usize, f64, f64)> {
                (0..sizes.len())
                    .map(|j| {
                        (
                            sizes[j],
                            median(runs.iter().map(|r| r[j].1)),
                            median(runs.iter().map(|r| r[j].2)),
                        )
                    })
                    .collect()
            };
            let (q, qr, r, t) = (
                summary(&runs[0]),
                summary(&runs[1]),
                summary(&runs[2]),
                summary(&runs[3]),
            );
            let mib = |x: &Vec<(usize, f64, f64)>| x.iter().find(|x| x.0 == 1 << 20).map(|x| x.2);
            if let (Some(runar), Some(tonic)) = (mib(&r), mib(&t)) {
                issue14.mib[usize::from(rt == Rt::Multi)] = Some((runar, tonic));
            }
            for i in 0..sizes.len() {
                let cell = |x: &(usize, f64, f64)| format!("{:.1} ({})", x.2, us(x.1));
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    rt.label(),
                    size_label(sizes[i]),
                    cell(&q[i]),
                    cell(&qr[i]),
                    cell(&r[i]),
                    cell(&t[i]),
                    ratio(r[i].2 / qr[i].2),
                    ratio(r[i].2 / t[i].2)
                )
                .unwrap();
            }
        }
        out.push('\n');
    }

    if o.wants("memory") {
        progress("memory (child processes)");
        writeln!(
            out,
            "### 5. Memory: resident set size (VmRSS) of a fresh process\n"
        )
        .unwrap();
        writeln!(out, "| process | RSS MiB | over baseline MiB |").unwrap();
        writeln!(out, "|---|---:|---:|").unwrap();
        let mut baseline = None;
        for (kind, what) in memory::KINDS {
            // The median of three children: RSS varies a little with allocation timing.
            let mut runs: Vec<u64> = (0..3).map(|_| memory::measure(kind)).collect();
            runs.sort_unstable();
            let kib = runs[1];
            let base = *baseline.get_or_insert(kib);
            writeln!(
                out,
                "| {what} | {:.1} | {:+.1} |",
                kib as f64 / 1024.0,
                (kib as f64 - base as f64) / 1024.0
            )
            .unwrap();
        }
        out.push('\n');
    }

    if o.wants("scale") {
        progress("scale (child processes)");
        writeln!(
            out,
            "### 6. The cost of a peer: N nodes in one process, full mesh over QUIC (current-thread)\n\n\
             Each row is one fresh process with N nodes meshed, against one with the same N nodes \
             and no peers. Per connection end: (meshed RSS − alone RSS) / (N × (N − 1)). Idle CPU: \
             over {} s once the mesh has formed, as a share of one core.\n",
            scale::IDLE.as_secs()
        )
        .unwrap();
        writeln!(
            out,
            "| nodes | connections | time to mesh s | RSS MiB (alone) | RSS MiB (meshed) | KiB per connection end | idle CPU % (alone) | idle CPU % (meshed) |"
        )
        .unwrap();
        writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        for n in [10usize, 25, 50, 60] {
            let alone = scale::measure(n, false);
            let meshed = scale::measure(n, true);
            let ends = (n * (n - 1)) as f64;
            writeln!(
                out,
                "| {n} | {} | {:.2} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |",
                n * (n - 1) / 2,
                meshed.mesh.as_secs_f64(),
                alone.rss_kib as f64 / 1024.0,
                meshed.rss_kib as f64 / 1024.0,
                (meshed.rss_kib as f64 - alone.rss_kib as f64) / ends,
                alone.idle_cpu * 100.0,
                meshed.idle_cpu * 100.0,
            )
            .unwrap();
        }
        out.push('\n');
    }

    issue14.write(&mut out);

    if !targets.is_empty() {
        writeln!(out, "### Targets\n").unwrap();
        writeln!(out, "| target | holds | measured |").unwrap();
        writeln!(out, "|---|---|---|").unwrap();
        for (what, ok, measured) in &targets {
            writeln!(
                out,
                "| {what} | {} | {measured} |",
                if *ok { "yes" } else { "**no**" }
            )
            .unwrap();
        }
        out.push('\n');
    }
    writeln!(
        out,
        "_Total run time {:.0} s._",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    println!("{out}");
}

/// Section 8: the cost of sealed fields per message, against the same echo with no label.
fn sealing_section(out: &mut String, o: &Options) {
    writeln!(
        out,
        "### 8. Sealed fields: the same unary echo between two nodes over QUIC, 100-byte `data` \
         plus a name, a balance and a note; labelled fields sealed on send and opened on receive, \
         both ways\n"
    )
    .unwrap();
    writeln!(
        out,
        "| runtime | record | p50 µs | p90 µs | p99 µs | sequential calls/s | 64 in flight calls/s | p50 − (a) µs | sequential / (a) | 64 in flight / (a) |"
    )
    .unwrap();
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for rt in Rt::BOTH {
        let results = unary_rounds(&System::SEALING, rt, o);
        let Some(&(_, base, base_par)) = results.first() else {
            continue;
        };
        for (s, lat, par) in &results {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:+.1} | {} | {} |",
                rt.label(),
                s.label(),
                us(lat.p50),
                us(lat.p90),
                us(lat.p99),
                rate(lat.per_sec),
                rate(*par),
                lat.p50 - base.p50,
                ratio(lat.per_sec / base.per_sec),
                ratio(par / base_par)
            )
            .unwrap();
        }
    }

    progress("sealing: sealed fields per call, and local calls");
    writeln!(
        out,
        "\n| record | labelled fields sealed per remote call (both nodes) | all opened | CPU µs per remote call (both nodes, current-thread) | its − (a) | local `node.request` ns (current-thread) | sealed by the local calls (`seal_stats().sealed`) |"
    )
    .unwrap();
    writeln!(out, "|---|---:|---|---:|---:|---:|---:|").unwrap();
    let per_call = Rt::Current.run(|| async {
        let mut v = Vec::new();
        for variant in sealing::Variant::ALL {
            let r = sealing::connect(variant).await;
            // Everything runs on this thread: its CPU time is both nodes' (the load of other
            // processes on the machine does not count in it, unlike wall time).
            let calls = 300;
            let cpu0 = sealing::thread_cpu_ns();
            for _ in 0..calls {
                rpc::Rpc::call(&r, Bytes::from_static(&[0xA5; 100])).await;
            }
            let cpu_us =
                sealing::thread_cpu_ns().saturating_sub(cpu0) as f64 / 1000.0 / f64::from(calls);
            let (per_call, all_opened) = r.sealed_per_call();
            v.push((per_call, all_opened, cpu_us));
            r.stop().await;
        }
        v
    });
    let local = Rt::Current.run(|| sealing::local(50_000, 5));
    let base_cpu = per_call.first().map_or(f64::NAN, |x| x.2);
    for ((variant, ns, sealed), (per_call, all_opened, cpu_us)) in local.iter().zip(per_call) {
        writeln!(
            out,
            "| {} | {per_call:.1} | {} | {cpu_us:.0} | {:+.0} | {ns:.0} | {sealed} |",
            variant.label(),
            if all_opened { "yes" } else { "**no**" },
            cpu_us - base_cpu
        )
        .unwrap();
    }
    out.push('\n');
}
