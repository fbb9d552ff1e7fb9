//! The web console at `/console`: a static page, script and style sheet compiled into the
//! binary, that call the JSON API (`connect.rs`) from the browser with `fetch`. The console
//! holds no state and has no endpoint of its own besides `kinds.json`, the catalog's facts the
//! script needs (kinds, their methods, phases, parents), so every rule (authentication,
//! authorization, redaction) is the API's and nothing is written twice (ADR 0035).

use axum::Router;
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::catalog::{Catalog, KindInfo, Verb};

/// Where the console is served.
pub(crate) const PREFIX: &str = "/console";

/// Only this origin's own files and calls: no inline script, no CDN, no frame around it.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// The console's routes, to merge into the server's router.
pub(crate) fn router(catalog: &Catalog) -> Router {
    let kinds = kinds_json(catalog).to_string();
    Router::new()
        // Someone who opens the server's address in a browser lands on the console.
        .route("/", page(|| async { axum::response::Redirect::to(PREFIX) }))
        .route(
            PREFIX,
            page(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            &format!("{PREFIX}/"),
            page(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            &format!("{PREFIX}/app.js"),
            page(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            &format!("{PREFIX}/app.css"),
            page(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            &format!("{PREFIX}/icon.svg"),
            page(|| async { asset("image/svg+xml", ICON) }),
        )
        .route(
            &format!("{PREFIX}/kinds.json"),
            page(move || async move { asset("application/json", kinds) }),
        )
        .route(
            &format!("{PREFIX}/{{*rest}}"),
            page(|| async { (StatusCode::NOT_FOUND, "not a page of the console\n") }),
        )
}

/// The routes when the console is off: a plain 404 that says why, rather than the gRPC
/// "unimplemented" every other unknown path gets.
pub(crate) fn turned_off() -> Router {
    let off = || async {
        (
            StatusCode::NOT_FOUND,
            "the console is off (--console=false)\n",
        )
    };
    Router::new()
        .route(PREFIX, page(off))
        .route(&format!("{PREFIX}/{{*rest}}"), page(off))
}

/// A GET route whose other methods answer what any unknown gRPC path answers, so a gRPC
/// client that calls here by mistake reads UNIMPLEMENTED, not an HTTP error.
fn page<H, T>(handler: H) -> MethodRouter
where
    H: Handler<T, ()>,
    T: 'static,
{
    get(handler).fallback(grpc_unimplemented)
}

async fn grpc_unimplemented(uri: http::Uri) -> Response {
    tonic::Status::unimplemented(format!("unknown method {}", uri.path()))
        .into_http::<tonic::body::Body>()
        .into_response()
}

/// One embedded file with the headers every console response carries.
fn asset(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut response = (StatusCode::OK, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may bring new files: the browser asks again rather than run stale script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What the script knows of each kind that organizations hold, read from the catalog so that
/// no name is repeated in JavaScript.
fn kinds_json(catalog: &Catalog) -> Value {
    let kinds: Vec<Value> = catalog
        .kinds()
        .iter()
        .filter(|kind| !kind.is_iam())
        .map(|kind| kind_json(catalog, kind))
        .collect();
    json!({ "kinds": kinds })
}

fn kind_json(catalog: &Catalog, kind: &KindInfo) -> Value {
    let path = |verb| catalog.method_of(&kind.name, verb).map(|m| m.path.clone());
    let phases: Vec<String> = catalog
        .method_of(&kind.name, Verb::List)
        .and_then(|list| list.input.get_field_by_name("phase"))
        .and_then(|field| field.kind().as_enum().cloned())
        .map(|phases| phases.values().map(|v| v.name().to_string()).collect())
        .unwrap_or_default();
    let subscribe_field = catalog
        .method_of(&kind.name, Verb::Subscribe)
        .and_then(|method| method.input.fields().next())
        .map(|field| field.json_name().to_string());
    json!({
        "name": kind.name,
        "enumName": kind.enum_name,
        "idPrefix": kind.id_prefix,
        "get": path(Verb::Get),
        "list": path(Verb::List),
        "getByReference": path(Verb::GetByReference),
        "subscribe": path(Verb::Subscribe),
        "subscribeField": subscribe_field,
        "phases": phases,
        "children": children(catalog, kind),
    })
}

/// The list methods that find resources belonging to one of `kind` (listBySession,
/// getByAgent, ...): how the console shows what refers to a resource. Their request field
/// (`agent_id`) names the parent's kind.
fn children(catalog: &Catalog, kind: &KindInfo) -> Vec<Value> {
    crate::kinds::LIST_BY
        .iter()
        .filter(|by| parent_kind(by.field) == kind.name)
        .filter_map(|by| {
            let method = catalog
                .method_of(by.kind, Verb::ListBy)
                .filter(|method| method.name == by.method)?;
            Some(json!({
                "kind": by.kind,
                "path": method.path,
                "field": field_json_name(by.field),
            }))
        })
        .collect()
}

/// "agent_id" names an Agent, "session_id" a Session.
fn parent_kind(field: &str) -> String {
    field
        .trim_end_matches("_id")
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The request field as proto3 JSON spells it ("agent_id" → "agentId").
fn field_json_name(field: &str) -> String {
    let mut words = field.split('_');
    let first = words.next().unwrap_or_default().to_string();
    words.fold(first, |name, word| name + &parent_kind(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_name_their_parent_kind() {
        assert_eq!(parent_kind("agent_id"), "Agent");
        assert_eq!(parent_kind("agent_instance_id"), "AgentInstance");
        assert_eq!(field_json_name("agent_instance_id"), "agentInstanceId");
        assert_eq!(field_json_name("session_id"), "sessionId");
    }
}
