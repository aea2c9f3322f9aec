//! The OpenAPI 3.1 document of Kassa's own API, generated from its routes (their
//! `#[utoipa::path]` attributes) and the types of their bodies, with what every
//! operation shares added here once: the security schemes, the error shape and the
//! answers to a missing or refused credential.

use std::sync::OnceLock;

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::OpenApi as _;

use super::error::ErrorBody;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Kassa API",
        version = "1.0.0",
        description = "Kassa's own API. Amounts are decimal strings with every decimal of the currency's precision (\"0.10000000\"); they are never JSON numbers. Authenticate with `Authorization: Bearer <token>` using a key created by `kassa key create --dialect native`.",
    ),
    servers((url = "/kassa/v1")),
    components(schemas(ErrorBody, kassa_engine::schemas::Amount)),
)]
struct Base;

/// The answers to a request without the credential an operation's security scheme
/// asks for, or with one that may not do it.
fn refusals(scheme: &str) -> &'static [(&'static str, &'static str)] {
    match scheme {
        "operator" => &[
            ("401", "No operator token configured, or a different one given."),
            ("429", "A rate limit: retry after the Retry-After header's seconds."),
        ],
        _ => &[
            ("401", "Missing, unknown or revoked key."),
            ("403", "Key lacks the scope, or the IP is not allowed."),
            ("429", "A rate limit of the key or the client's IP: retry after the Retry-After header's seconds."),
        ],
    }
}

fn add_refusals(op: &mut Operation) {
    // A requirement serializes as {scheme: scopes}; its names are not public otherwise.
    let schemes: Vec<String> = op
        .security
        .iter()
        .flatten()
        .filter_map(|req| serde_json::to_value(req).ok())
        .filter_map(|v| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    for scheme in schemes {
        for (status, description) in refusals(&scheme) {
            let error = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
            let response = ResponseBuilder::new().description(*description).content("application/json", error).build();
            op.responses.responses.entry(status.to_string()).or_insert(response.into());
        }
    }
}

/// The document of every route [`super::router`] serves.
pub fn document() -> OpenApi {
    let mut doc = super::routes().into_openapi();
    doc.merge(Base::openapi());
    doc.info = Base::openapi().info;
    // The package's licence is the server's, not a term of using the API.
    doc.info.license = None;
    doc.servers = Base::openapi().servers;
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    let mut operator = Http::new(HttpAuthScheme::Bearer);
    operator.description =
        Some("The operator_token of the configuration (not a merchant's key). Without one configured, the operator API refuses every call.".into());
    components.add_security_scheme("operator", SecurityScheme::Http(operator));
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten() {
            add_refusals(op);
        }
    }
    doc
}

/// The document as served, rendered once.
pub fn served() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document().to_pretty_json().expect("the OpenAPI document renders as JSON"))
}

