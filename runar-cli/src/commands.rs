//! The commands: each asks the nodes through the [`Mesh`] and prints a table or JSON.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use comfy_table::{Table, presets};
use prost_reflect::MessageDescriptor;
use runar::introspection::{self, ActionDescription, CallKind, NodeStatsReport, ServiceList};
use runar::{Code, EventHandler, NodeId, PublishOptions, RequestOptions, SubscribeOptions, Value};
use serde_json::json;

use crate::error::CliError;
use crate::join::Mesh;
use crate::schema::{self, Schemas};

pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(header.iter().copied());
    table
}

pub(crate) fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

fn duration_text(micros: u64) -> String {
    if micros >= 10_000 {
        format!("{:.1}ms", micros as f64 / 1000.0)
    } else {
        format!("{micros}µs")
    }
}

fn kind_text(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Unary => "unary",
        CallKind::ServerStreaming => "server-streaming",
        CallKind::ClientStreaming => "client-streaming",
        CallKind::Bidi => "bidi",
    }
}

/// `runar nodes`.
pub(crate) async fn nodes(mesh: &Mesh) -> Result<(), CliError> {
    let rtts = mesh.node.peer_list().peers;
    let mut rows = Vec::new();
    for id in mesh.node_ids() {
        let info = mesh.info(id).await?;
        let services = mesh.services(id).await?;
        let rtt = rtts
            .iter()
            .find(|p| p.node_id == info.node_id)
            .map_or(0, |p| p.rtt_us);
        let paths: Vec<String> = services.services.iter().map(|s| s.path.clone()).collect();
        rows.push((info, paths, rtt));
    }
    if mesh.global.json {
        let nodes: Vec<_> = rows
            .iter()
            .map(|(info, services, rtt)| {
                json!({
                    "id": info.node_id, "name": info.name, "version": info.version,
                    "network": info.network, "addresses": info.addresses,
                    "services": services, "rtt_us": rtt, "uptime_ms": info.uptime_ms,
                })
            })
            .collect();
        print_json(&json!(nodes));
        return Ok(());
    }
    let mut t = table(&["ID", "NAME", "ADDRESSES", "SERVICES", "RTT"]);
    for (info, services, rtt) in &rows {
        t.add_row([
            info.node_id.clone(),
            info.name.clone(),
            info.addresses.join(" "),
            services.join(" "),
            duration_text(*rtt),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `runar list`.
pub(crate) async fn list(mesh: &Mesh, node: Option<&str>) -> Result<(), CliError> {
    let mut all = Vec::new();
    for id in mesh.selected(node).await? {
        let name = mesh.info(id).await?.name;
        all.push((id, name, mesh.services(id).await?));
    }
    if mesh.global.json {
        let nodes: Vec<_> = all
            .iter()
            .map(|(id, name, list)| {
                let services: Vec<_> = list.services.iter().map(service_json).collect();
                json!({ "node": id.to_string(), "name": name, "services": services })
            })
            .collect();
        print_json(&json!(nodes));
        return Ok(());
    }
    let mut t = table(&[
        "NODE",
        "SERVICE",
        "ACTION / EVENT",
        "KIND",
        "REQUEST",
        "RESPONSE",
    ]);
    for (_, name, list) in &all {
        for service in &list.services {
            for action in &service.actions {
                t.add_row([
                    name.as_str(),
                    service.path.as_str(),
                    action.path.as_str(),
                    kind_text(action.kind()),
                    action.request_type.as_str(),
                    action.response_type.as_str(),
                ]);
            }
            for event in &service.events {
                t.add_row([
                    name.as_str(),
                    service.path.as_str(),
                    event.topic.as_str(),
                    "event",
                    event.payload_type.as_str(),
                    "",
                ]);
            }
        }
    }
    println!("{t}");
    Ok(())
}

fn service_json(service: &introspection::ServiceDescription) -> serde_json::Value {
    let actions: Vec<_> = service
        .actions
        .iter()
        .map(|a| {
            json!({ "path": a.path, "kind": kind_text(a.kind()),
                    "request": a.request_type, "response": a.response_type })
        })
        .collect();
    let events: Vec<_> = service
        .events
        .iter()
        .map(|e| json!({ "topic": e.topic, "type": e.payload_type }))
        .collect();
    json!({
        "path": service.path, "name": service.name, "version": service.version,
        "description": service.description, "network": service.network,
        "actions": actions, "events": events, "has_schema": !service.schema.is_empty(),
    })
}

fn lists(all: &[(NodeId, ServiceList)]) -> impl Iterator<Item = &ServiceList> {
    all.iter().map(|(_, l)| l)
}

/// `runar describe NAME`.
pub(crate) async fn describe(mesh: &Mesh, name: &str) -> Result<(), CliError> {
    let all = mesh.all_services().await?;
    let schemas = Schemas::new(lists(&all));
    let by_path = lists(&all)
        .flat_map(|l| &l.services)
        .find(|s| s.path == name);
    let text = if let Some(service) = by_path {
        // By its name; else the schema's service whose rpcs take the action's request types.
        let takes_ours = |s: &prost_reflect::ServiceDescriptor| {
            s.methods().any(|m| {
                service
                    .actions
                    .iter()
                    .any(|a| a.request_type == m.input().full_name())
            })
        };
        let descriptor = schemas
            .service(&service.name)
            .or_else(|| schemas.pool.services().find(takes_ours))
            .ok_or_else(|| CliError::not_found(format!("the service `{name}` serves no schema")))?;
        schema::service_text(&descriptor)
    } else if let Some(service) = schemas.service(name) {
        schema::service_text(&service)
    } else if let Some(message) = schemas
        .pool
        .get_message_by_name(name.trim_start_matches('.'))
    {
        schema::message_text(&message)
    } else if let Some(e) = schemas.pool.get_enum_by_name(name.trim_start_matches('.')) {
        schema::enum_text(&e)
    } else {
        return Err(CliError::not_found(format!(
            "no service or message `{name}` in the nodes' schemas"
        ))
        .with_hint("`runar list` shows the services and their message types"));
    };
    if mesh.global.json {
        print_json(&json!({ "name": name, "proto": text }));
    } else {
        print!("{text}");
    }
    Ok(())
}

/// True when the action path `pattern` (segments, `{param}` templates) names `path`.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (a.starts_with('{') && a.ends_with('}')) => {}
            _ => return false,
        }
    }
}

/// The action at `path` as some node describes it (an exact path before a template).
fn find_action<'a>(all: &'a [(NodeId, ServiceList)], path: &str) -> Option<&'a ActionDescription> {
    let actions = || {
        lists(all)
            .flat_map(|l| &l.services)
            .flat_map(|s| &s.actions)
    };
    actions()
        .find(|a| a.path == path)
        .or_else(|| actions().find(|a| path_matches(&a.path, path)))
}

/// `-d JSON` or `-d @FILE`.
fn read_data(data: &str) -> Result<String, CliError> {
    match data.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CliError::invalid(format!("cannot read {file}: {e}"))),
        None => Ok(data.to_owned()),
    }
}

/// `runar call PATH -d JSON`.
pub(crate) async fn call(mesh: &Mesh, path: &str, data: Option<&str>) -> Result<(), CliError> {
    let all = mesh.all_services().await?;
    let action = find_action(&all, path).ok_or_else(|| {
        CliError::not_found(format!("no node serves `{path}`"))
            .with_hint("`runar list` shows the actions")
    })?;
    if action.request_type.is_empty() || action.response_type.is_empty() {
        return Err(CliError::not_found(format!(
            "`{path}` has no schema, so its JSON cannot be converted"
        ))
        .with_hint("services generated from a .proto or with #[runar::service] serve one"));
    }
    let schemas = Schemas::new(lists(&all));
    let request = schemas.message(&action.request_type)?;
    let response = schemas.message(&action.response_type)?;
    let json = read_data(data.unwrap_or("{}"))?;
    if action.kind() != CallKind::Unary {
        return call_stream(mesh, path, action.kind(), &request, &response, &json).await;
    }
    let bytes = schema::encode_json(&request, &json, &mesh.seal)?;
    let options = RequestOptions::default()
        .with_timeout(mesh.global.timeout)
        .with_wait_for_ready(true);
    let reply = mesh
        .node
        .request_value(path, Value::from_encoded(bytes.into()), options)
        .await?;
    let json = schema::decode_to_json(&response, &reply.to_bytes(), &mesh.seal)?;
    if mesh.global.json {
        print_json(&json);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string())
        );
    }
    Ok(())
}

/// A streaming `runar call`: the request is one JSON object, or for a client or bidirectional
/// stream one JSON object a line (an empty input sends none); every reply is printed as it
/// comes, one JSON object a line. `--timeout` bounds finding the action and starting the
/// call, not how long a stream lives (stop it with Ctrl-C).
async fn call_stream(
    mesh: &Mesh,
    path: &str,
    kind: CallKind,
    request: &MessageDescriptor,
    response: &MessageDescriptor,
    json: &str,
) -> Result<(), CliError> {
    let messages = if kind == CallKind::ServerStreaming {
        vec![schema::encode_json(request, json, &mesh.seal)?]
    } else {
        json.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| schema::encode_json(request, line, &mesh.seal))
            .collect::<Result<Vec<_>, _>>()?
    };
    let requests = futures::stream::iter(
        messages
            .into_iter()
            .map(|bytes| Value::from_encoded(bytes.into())),
    );
    let options = RequestOptions::default().with_wait_for_ready(true);
    let start = mesh.node.request_stream_value(path, requests, options);
    let mut replies = tokio::time::timeout(mesh.global.timeout, start)
        .await
        .map_err(|_| {
            CliError::new(
                Code::DeadlineExceeded,
                format!("`{path}` did not start within {:?}", mesh.global.timeout),
            )
        })??;
    while let Some(reply) = futures::StreamExt::next(&mut replies).await {
        let json = schema::decode_to_json(response, &reply?.to_bytes(), &mesh.seal)?;
        print_json(&json);
    }
    Ok(())
}

/// `runar gateway --listen ADDR [--tls-cert PEM --tls-key PEM]`: a gRPC gateway on the CLI's
/// node, serving every service the network offers, until Ctrl-C. Prints the bound address
/// (`{"listen": ADDR}` with `--json`) once it listens.
pub(crate) async fn gateway(
    mesh: &Mesh,
    listen: std::net::SocketAddr,
    tls: Option<(&Path, &Path)>,
) -> Result<(), CliError> {
    let mut config = runar_grpc::GatewayConfig::default();
    if let Some((cert, key)) = tls {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| CliError::not_found(format!("cannot read {}: {e}", path.display())))
        };
        config = config.with_tls_identity(read(cert)?, read(key)?);
    }
    let failed = |e: runar_grpc::GatewayError| CliError::new(Code::Unavailable, e.to_string());
    let gateway = runar_grpc::Gateway::with_config(mesh.node.clone(), config);
    let addr = gateway.bind(listen).await.map_err(failed)?;
    if mesh.global.json {
        print_json(&json!({ "listen": addr.to_string() }));
    } else {
        println!("gRPC gateway listening on {addr}");
    }
    let serving = gateway.serve();
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => served.map_err(failed)?,
        _ = tokio::signal::ctrl_c() => {
            // Calls in flight finish; no new ones are taken.
            gateway.shutdown();
            serving.await.map_err(failed)?;
        }
    }
    Ok(())
}

/// `runar pub TOPIC --type MESSAGE -d JSON`.
pub(crate) async fn publish(
    mesh: &Mesh,
    topic: &str,
    data: &str,
    message_type: &str,
) -> Result<(), CliError> {
    let all = mesh.all_services().await?;
    let schemas = Schemas::new(lists(&all));
    let message = schemas.message(message_type)?;
    let bytes = schema::encode_json(&message, &read_data(data)?, &mesh.seal)?;
    let before = mesh.node.stats();
    mesh.node
        .publish_value(
            topic,
            Value::from_encoded(bytes.into()),
            PublishOptions::default(),
        )
        .await?;
    // Leave only once the event is on its way to every subscribing peer.
    let after = mesh.node.stats();
    let offered = after
        .events_delivered
        .saturating_add(after.events_dropped)
        .saturating_sub(
            before
                .events_delivered
                .saturating_add(before.events_dropped),
        );
    if mesh.global.json {
        print_json(&json!({ "topic": topic, "deliveries": offered }));
    } else {
        println!("published on {topic}");
    }
    Ok(())
}

/// `runar sub PATTERN [--count N]`.
pub(crate) async fn subscribe(
    mesh: &Mesh,
    pattern: &str,
    count: Option<u64>,
    message_type: Option<&str>,
) -> Result<(), CliError> {
    let all = mesh.all_services().await?;
    let schemas = Schemas::new(lists(&all));
    let fixed = message_type.map(|t| schemas.message(t)).transpose()?;
    // The events the schemas declare, to decode by topic.
    let declared: Vec<(String, String)> = lists(&all)
        .flat_map(|l| &l.services)
        .flat_map(|s| &s.events)
        .map(|e| (e.topic.clone(), e.payload_type.clone()))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let handler: EventHandler = std::sync::Arc::new(move |value, ctx| {
        let _ = tx.send((ctx.topic().to_owned(), (*value).clone()));
        Box::pin(async { Ok(()) })
    });
    let id = mesh
        .node
        .subscribe_value(pattern, SubscribeOptions::default(), handler)
        .await?;
    if !mesh.global.json {
        eprintln!("listening on {pattern}…");
    }
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while count.is_none_or(|n| seen < n) {
        let (topic, value) = tokio::select! {
            event = rx.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = &mut ctrl_c => break,
        };
        seen = seen.saturating_add(1);
        let message = fixed.clone().or_else(|| {
            declared
                .iter()
                .find(|(t, _)| *t == topic)
                .and_then(|(_, ty)| schemas.message(ty).ok())
        });
        let bytes = value.to_bytes();
        let line = match message {
            Some(message) => {
                let event = schema::decode_to_json(&message, &bytes, &mesh.seal)?;
                json!({ "topic": topic, "type": message.full_name(), "event": event })
            }
            None => json!({ "topic": topic, "bytes": hex(&bytes) }),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    let _ = mesh.node.unsubscribe(id).await;
    Ok(())
}

/// `runar ping NODE [--count N]`.
pub(crate) async fn ping(mesh: &Mesh, node: &str, count: u32) -> Result<(), CliError> {
    let id = mesh.resolve(node).await?;
    let mut rtts = Vec::new();
    for _ in 0..count.max(1) {
        let start = Instant::now();
        let _: introspection::PingReply = mesh
            .ask(id, introspection::PING, introspection::PingRequest {})
            .await?;
        rtts.push(start.elapsed());
    }
    rtts.sort();
    let pick = |pct: usize| -> Duration {
        let rank = (rtts.len() * pct).div_ceil(100).max(1);
        rtts.get(rank - 1).copied().unwrap_or_default()
    };
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let (min, p50, p99) = (micros(pick(0)), micros(pick(50)), micros(pick(99)));
    if mesh.global.json {
        print_json(&json!({
            "node": id.to_string(), "count": rtts.len(),
            "min_us": min, "p50_us": p50, "p99_us": p99,
        }));
    } else {
        println!(
            "{} pings to {id}: min {} / p50 {} / p99 {}",
            rtts.len(),
            duration_text(min),
            duration_text(p50),
            duration_text(p99)
        );
    }
    Ok(())
}

fn stats_json(stats: &NodeStatsReport) -> serde_json::Value {
    let actions: Vec<_> = stats
        .actions
        .iter()
        .map(|a| {
            json!({ "path": a.path, "requests": a.requests, "errors": a.errors,
                    "in_flight": a.in_flight, "p50_us": a.p50_us, "p90_us": a.p90_us,
                    "p99_us": a.p99_us, "max_us": a.max_us })
        })
        .collect();
    let peers: Vec<_> = stats
        .peers
        .iter()
        .map(|p| {
            json!({ "id": p.node_id, "name": p.name, "addresses": p.addresses,
                    "rtt_us": p.rtt_us, "connected_since_ms": p.connected_since_ms,
                    "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
                    "lost_packets": p.lost_packets, "requests_in_flight": p.requests_in_flight })
        })
        .collect();
    let subscriptions: Vec<_> = stats
        .subscriptions
        .iter()
        .map(|s| json!({ "id": s.id, "pattern": s.pattern, "delivered": s.delivered, "dropped": s.dropped }))
        .collect();
    json!({
        "uptime_ms": stats.uptime_ms,
        "events": {
            "published": stats.events_published, "received": stats.events_received,
            "delivered": stats.events_delivered, "dropped": stats.events_dropped,
            "rejected": stats.events_rejected, "slow_consumers": stats.slow_consumers,
        },
        "actions": actions, "peers": peers, "subscriptions": subscriptions,
    })
}

/// `runar stats [--node ID]`.
pub(crate) async fn stats(mesh: &Mesh, node: Option<&str>) -> Result<(), CliError> {
    let mut all = Vec::new();
    for id in mesh.selected(node).await? {
        let name = mesh.info(id).await?.name;
        let stats: NodeStatsReport = mesh
            .ask(id, introspection::STATS, introspection::NodeStatsRequest {})
            .await?;
        all.push((id, name, stats));
    }
    if mesh.global.json {
        let nodes: Vec<_> = all
            .iter()
            .map(|(id, name, s)| json!({ "node": id.to_string(), "name": name, "stats": stats_json(s) }))
            .collect();
        print_json(&json!(nodes));
        return Ok(());
    }
    let mut actions = table(&[
        "NODE",
        "ACTION",
        "REQUESTS",
        "ERRORS",
        "IN FLIGHT",
        "P50",
        "P99",
        "MAX",
    ]);
    let mut peers = table(&["NODE", "PEER", "RTT", "SENT", "RECEIVED", "LOST"]);
    let mut events = table(&[
        "NODE",
        "PUBLISHED",
        "RECEIVED",
        "DELIVERED",
        "DROPPED",
        "REJECTED",
    ]);
    for (_, name, s) in &all {
        for a in &s.actions {
            let errors: Vec<String> = a.errors.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            actions.add_row([
                name.clone(),
                a.path.clone(),
                a.requests.to_string(),
                errors.join(" "),
                a.in_flight.to_string(),
                duration_text(a.p50_us),
                duration_text(a.p99_us),
                duration_text(a.max_us),
            ]);
        }
        for p in &s.peers {
            peers.add_row([
                name.clone(),
                format!("{} ({})", p.name, p.node_id),
                duration_text(p.rtt_us),
                p.bytes_sent.to_string(),
                p.bytes_received.to_string(),
                p.lost_packets.to_string(),
            ]);
        }
        events.add_row([
            name.clone(),
            s.events_published.to_string(),
            s.events_received.to_string(),
            s.events_delivered.to_string(),
            s.events_dropped.to_string(),
            s.events_rejected.to_string(),
        ]);
    }
    println!("{actions}\n\n{peers}\n\n{events}");
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `path` for secrets: a new file (an existing one is refused), mode `0600`.
pub(crate) fn create_private_file(path: &Path) -> Result<std::fs::File, CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::AlreadyExists {
            Code::AlreadyExists
        } else {
            Code::PermissionDenied
        };
        CliError::new(code, format!("cannot create {}: {e}", path.display()))
    })
}

/// `runar keygen [--out FILE]`.
pub(crate) fn keygen(out: Option<&Path>) -> Result<(), CliError> {
    let secret = hex(&runar::NetworkKey::generate_secret()?);
    let Some(path) = out else {
        println!("{secret}");
        return Ok(());
    };
    let mut file = create_private_file(path)?;
    writeln!(file, "{secret}")
        .map_err(|e| CliError::internal(format!("cannot write {}: {e}", path.display())))?;
    eprintln!(
        "wrote a new network secret to {} (mode 0600)",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn templates_match_paths() {
        assert!(path_matches("shop/items/{id}", "shop/items/7"));
        assert!(path_matches("shop/get", "shop/get"));
        assert!(!path_matches("shop/items/{id}", "shop/items"));
        assert!(!path_matches("shop/get", "shop/put"));
    }
}
