//! Calls by service, method and code, and their latency: one entry per RPC path, made at
//! start-up, so that a call costs a map lookup, an atomic add and a histogram observation,
//! and never formats or allocates a label.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prost_reflect::MethodDescriptor;
use tonic::Code;

use crate::catalog::{BackendStream, BackendVerb, Catalog, Verb};

/// gRPC status codes as Go's `codes.Code.String()` spells them, by number: the values
/// go-grpc-prometheus gives `grpc_code`, so that dashboards and alerts written for it work.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Seconds, from a point read on loopback (~0.1 ms) to a long watch.
const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Services served besides the catalog's, and their methods' types (tonic-health,
/// tonic-reflection).
const OTHER_METHODS: [(&str, &str, &str); 4] = [
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
];

/// What one RPC path has served.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    service: String,
    method: String,
    /// go-grpc-prometheus's `grpc_type`: unary, server_stream, client_stream, bidi_stream.
    kind: &'static str,
    /// Completed calls by code (the index is the code's number).
    calls: [AtomicU64; 17],
    seconds: Histogram,
    /// For watches (ResourceService/watch, subscribe): the open-streams gauge.
    open: Option<Gauge>,
}

impl MethodMetrics {
    fn new(service: &str, method: &str, kind: &'static str, open: Option<Gauge>) -> Self {
        Self {
            service: service.to_string(),
            method: method.to_string(),
            kind,
            calls: Default::default(),
            seconds: Histogram::new(LATENCY_BUCKETS),
            open,
        }
    }

    fn used(&self) -> bool {
        self.calls
            .iter()
            .any(|count| count.load(Ordering::Relaxed) > 0)
    }
}

/// Every RPC path the server answers, and one entry shared by any other path.
#[derive(Debug)]
pub(crate) struct RpcMetrics {
    by_path: HashMap<String, Arc<MethodMetrics>>,
    /// In path order, for a stable /metrics.
    ordered: Vec<Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

impl RpcMetrics {
    /// An entry for every method of every service in `catalog` (read from its descriptors),
    /// health and reflection; `watch_streams` counts the open watch streams.
    pub(crate) fn new(catalog: &Catalog, watch_streams: &Gauge) -> Self {
        let mut entries = Vec::new();
        for service in catalog.services() {
            let Some(descriptor) = stigmer_api::DESCRIPTOR_POOL.get_service_by_name(service) else {
                continue;
            };
            for method in descriptor.methods() {
                let path = format!("/{service}/{}", method.name());
                let watch = catalog
                    .method(&path)
                    .is_some_and(|m| m.verb == Verb::Subscribe)
                    || catalog
                        .backend_method(&path)
                        .is_some_and(|m| m.verb == BackendVerb::Stream(BackendStream::Watch));
                let open = watch.then(|| watch_streams.clone());
                let entry = MethodMetrics::new(service, method.name(), kind_of(&method), open);
                entries.push((path, entry));
            }
        }
        for (service, method, kind) in OTHER_METHODS {
            let entry = MethodMetrics::new(service, method, kind, None);
            entries.push((format!("/{service}/{method}"), entry));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let unknown = Arc::new(MethodMetrics::new("unknown", "unknown", "unary", None));
        let mut by_path = HashMap::new();
        let mut ordered = Vec::new();
        for (path, entry) in entries {
            let entry = Arc::new(entry);
            ordered.push(Arc::clone(&entry));
            by_path.insert(path, entry);
        }
        ordered.push(Arc::clone(&unknown));
        Self {
            by_path,
            ordered,
            unknown,
        }
    }

    /// Starts measuring a call to `path`; it is counted when the returned guard is finished
    /// or dropped.
    pub(crate) fn start(&self, path: &str) -> CallMetrics {
        let method = Arc::clone(self.by_path.get(path).unwrap_or(&self.unknown));
        if let Some(open) = &method.open {
            open.inc();
        }
        CallMetrics {
            method,
            started: Instant::now(),
            code: None,
        }
    }
}

fn kind_of(method: &MethodDescriptor) -> &'static str {
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => "unary",
        (false, true) => "server_stream",
        (true, false) => "client_stream",
        (true, true) => "bidi_stream",
    }
}

/// One call being measured: counted with its code (Canceled when it ends without one, the
/// client having gone) and its duration when dropped.
pub(crate) struct CallMetrics {
    method: Arc<MethodMetrics>,
    started: Instant,
    code: Option<Code>,
}

impl CallMetrics {
    /// Ends the call with `code` (`None`: the client went away first).
    pub(crate) fn finish(mut self, code: Option<Code>) {
        self.code = code;
    }
}

impl Drop for CallMetrics {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled) as usize;
        let method = &self.method;
        method.calls[code.min(CODE_NAMES.len() - 1)].fetch_add(1, Ordering::Relaxed);
        method.seconds.observe(self.started.elapsed().as_secs_f64());
        if let Some(open) = &method.open {
            open.dec();
        }
    }
}

/// Writes [`RpcMetrics`] at each scrape: only the (method, code) pairs that happened.
#[derive(Debug)]
pub(crate) struct RpcCollector(pub(crate) Arc<RpcMetrics>);

impl Collector for RpcCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        {
            let mut handled = encoder.encode_descriptor(
                "grpc_server_handled",
                "gRPC calls completed, by type, service, method and status code (Canceled: the \
                 client went away before the end)",
                None,
                MetricType::Counter,
            )?;
            for method in &self.0.ordered {
                for (code, count) in method.calls.iter().enumerate() {
                    let count = count.load(Ordering::Relaxed);
                    if count == 0 {
                        continue;
                    }
                    let labels = [
                        ("grpc_type", method.kind),
                        ("grpc_service", method.service.as_str()),
                        ("grpc_method", method.method.as_str()),
                        ("grpc_code", CODE_NAMES[code]),
                    ];
                    handled
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }
        let mut latency = encoder.encode_descriptor(
            "grpc_server_handling_seconds",
            "Seconds from a call's arrival to the end of its response (for a stream, its whole \
             life), by type, service and method",
            None,
            MetricType::Histogram,
        )?;
        for method in self.0.ordered.iter().filter(|method| method.used()) {
            let labels = [
                ("grpc_type", method.kind),
                ("grpc_service", method.service.as_str()),
                ("grpc_method", method.method.as_str()),
            ];
            method.seconds.encode(latency.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_the_code_numbers() {
        for (number, name) in CODE_NAMES.iter().enumerate() {
            let code = Code::from_i32(number as i32);
            let go_name = match code {
                Code::Cancelled => "Canceled".to_string(),
                Code::Ok => "OK".to_string(),
                other => format!("{other:?}"),
            };
            assert_eq!(*name, go_name, "code {number}");
        }
    }
}
