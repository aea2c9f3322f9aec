//! The payment terminal (spec §4): `GET /terminal/?data=<base64(JSON)>&signature=<hex
//! HMAC-SHA512(secret, JSON)>`, a link the merchant signs with the secret of one of its
//! CoinsPaid-style keys. JSON: `client_id` (the merchant's id), `currency`, `amount`?,
//! `convert_to`?, `is_iframe`?, `foreign_id`, `url_back`? and, as an extension,
//! `expires_at` (Unix seconds). The page offers the currencies the payer can send (the
//! link's first), shows the address of that `foreign_id` in the chosen one (the one
//! `addresses/take` gives, deposits converted to `convert_to`), its QR code, and the
//! deposit's progress (it reloads itself; no JavaScript). A tampered, expired or
//! malformed link gets an error page and creates nothing.

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kassa_core::ledger::MerchantId;
use kassa_core::{Currency, SignPolicy};
use kassa_engine::EngineError;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha512;

use super::{origin, Version, MAX_FOREIGN_ID_CHARS};
use crate::pages::{esc, qr_svg};
use crate::{wire, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/terminal", get(terminal)).route("/terminal/", get(terminal))
}

#[derive(Deserialize)]
struct TerminalQuery {
    data: Option<String>,
    signature: Option<String>,
    /// The payer's choice (not signed: one of the currencies the link offers).
    currency: Option<String>,
}

/// A verified terminal link.
struct Link {
    merchant: MerchantId,
    merchant_name: String,
    currency: Currency,
    amount: Option<String>,
    convert_to: Option<String>,
    is_iframe: bool,
    foreign_id: String,
    url_back: Option<String>,
}

/// Why a link is refused: the page's status and what it says.
struct Refused(StatusCode, String);

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Refused(StatusCode::BAD_REQUEST, message.into())
    }
}

/// Largest `data` accepted, in characters.
const MAX_DATA_CHARS: usize = 4096;

/// The link's JSON bytes: base64 as the documentation shows it (standard, padded) or
/// URL-safe, with or without padding; a `+` a query string turned into a space is one.
fn decode(data: &str) -> Result<Vec<u8>, Refused> {
    let normal: String = data
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '+',
            '_' => '/',
            c => c,
        })
        .filter(|c| *c != '=')
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(normal.as_bytes()).map_err(|_| Refused::bad("its data is not base64"))
}

fn text_field(p: &Map<String, Value>, key: &str) -> Result<Option<String>, Refused> {
    wire::amount_text(wire::non_blank(p.get(key))).map_err(|_| Refused::bad(format!("{key} must be a string")))
}

async fn verify(state: &AppState, q: &TerminalQuery) -> Result<Link, Refused> {
    let (Some(data), Some(signature)) = (q.data.as_deref(), q.signature.as_deref()) else {
        return Err(Refused::bad("it has no data or no signature"));
    };
    if data.len() > MAX_DATA_CHARS {
        return Err(Refused::bad("its data is too long"));
    }
    let json = decode(data)?;
    let signature = hex::decode(signature.trim()).map_err(|_| Refused::bad("its signature is not hex"))?;
    let p: Map<String, Value> = serde_json::from_slice(&json).map_err(|_| Refused::bad("its data is not a JSON object"))?;
    let client_id = match p.get("client_id") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
    .ok_or_else(|| Refused::bad("client_id is missing or not a number"))?;
    let merchant = MerchantId(client_id);
    // Only a link signed by the merchant learns more than this.
    let forged = || Refused(StatusCode::FORBIDDEN, "its signature does not match (the link was changed, or not signed by this merchant)".into());
    let (merchant_name, secrets) = match state.engine.merchant_signing_secrets(merchant, "coinspaid").await {
        Ok(found) => found,
        Err(EngineError::NotFound(_)) => return Err(forged()),
        Err(e) => {
            tracing::error!(error = %e, "terminal: cannot read the merchant's keys");
            return Err(Refused(StatusCode::SERVICE_UNAVAILABLE, "the terminal is unavailable; try again".into()));
        }
    };
    let signed = secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(&json);
        mac.verify_slice(&signature).is_ok()
    });
    if !signed {
        return Err(forged());
    }
    if let Some(expires) = p.get("expires_at") {
        let at = expires.as_i64().ok_or_else(|| Refused::bad("expires_at must be Unix seconds"))?;
        if state.engine.now_ms() > at.saturating_mul(1000) {
            return Err(Refused(StatusCode::GONE, "it has expired; ask the shop for a new one".into()));
        }
    }
    let code = text_field(&p, "currency")?.ok_or_else(|| Refused::bad("currency is missing"))?;
    let currency = match state.engine.currencies.get(&code) {
        Ok(c) if state.engine.receivable(c.code.as_str()) => c.clone(),
        _ => return Err(Refused::bad(format!("{code} cannot be paid here"))),
    };
    let foreign_id = text_field(&p, "foreign_id")?.ok_or_else(|| Refused::bad("foreign_id is missing"))?;
    if foreign_id.chars().count() > MAX_FOREIGN_ID_CHARS {
        return Err(Refused::bad(format!("foreign_id is longer than {MAX_FOREIGN_ID_CHARS} characters")));
    }
    let amount = match text_field(&p, "amount")? {
        Some(a) => Some(currency.parse_amount(&a, SignPolicy::Positive).map_err(|e| Refused::bad(format!("amount: {e}")))?.to_string()),
        None => None,
    };
    let convert_to = match text_field(&p, "convert_to")? {
        Some(to) => Some(state.engine.currencies.active(&to).map_err(|_| Refused::bad(format!("convert_to: {to} is not a currency here")))?.code.to_string()),
        None => None,
    };
    let is_iframe = wire::flag(p.get("is_iframe")).map_err(|_| Refused::bad("is_iframe must be true or false"))?.unwrap_or(false);
    let url_back = match text_field(&p, "url_back")? {
        Some(u) => Some(kassa_engine::webhooks::check_url(&u).map_err(|e| Refused::bad(format!("url_back: {e}")))?.to_string()),
        None => None,
    };
    Ok(Link { merchant, merchant_name, currency, amount, convert_to, is_iframe, foreign_id, url_back })
}

/// The currencies the payer may send: the link's first, then every other one that can
/// be received here (and converted to `convert_to`, when the link asks for it).
fn offered(state: &AppState, link: &Link) -> Vec<Currency> {
    let mut list = vec![link.currency.clone()];
    for c in state.engine.currencies.all() {
        if c.code == link.currency.code || !state.engine.receivable(c.code.as_str()) {
            continue;
        }
        if link.convert_to.as_deref().is_some_and(|to| to != c.code.as_str() && state.engine.rate(c.code.as_str(), to).is_err()) {
            continue;
        }
        list.push(c.clone());
    }
    list
}

fn html_page(status: StatusCode, title: &str, body: &str, frame_ancestors: &str, refresh: bool) -> Response {
    let nonce = kassa_engine::secrets::random_alphanumeric(24);
    let refresh = if refresh { "<meta http-equiv=\"refresh\" content=\"5\">" } else { "" };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
         <title>{}</title><style nonce=\"{nonce}\">{CSS}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let csp = format!("default-src 'none'; style-src 'nonce-{nonce}'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors {frame_ancestors}");
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8".to_string()), (CACHE_CONTROL, "no-store".to_string()), (CONTENT_SECURITY_POLICY, csp)], html)
        .into_response()
}

fn refused_page(r: Refused) -> Response {
    let body = format!("<main class=\"card\" id=\"terminal-error\"><h1>This payment link cannot be used</h1><p id=\"reason\">It {}.</p></main>", esc(&r.1));
    html_page(r.0, "Payment link not valid", &body, "'none'", false)
}

async fn terminal(State(state): State<AppState>, q: Result<Query<TerminalQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let Ok(Query(q)) = q else { return refused_page(Refused::bad("has a malformed query string")) };
    let link = match verify(&state, &q).await {
        Ok(link) => link,
        Err(r) => {
            // A forged link counts as a failed authentication (the client is slowed down).
            let forged = r.0 == StatusCode::FORBIDDEN;
            let mut page = refused_page(r);
            if forged {
                page.extensions_mut().insert(crate::limits::AuthFailed);
            }
            return page;
        }
    };
    let frame_ancestors = match (link.is_iframe, state.terminal_frame_ancestors.get(&link.merchant_name)) {
        (true, Some(origins)) if !origins.is_empty() => origins.join(" "),
        _ => "'none'".to_string(),
    };
    let offered = offered(&state, &link);
    let chosen = q.currency.as_deref().and_then(|c| offered.iter().find(|o| o.code.as_str() == c)).unwrap_or(&offered[0]).clone();
    let address = match state
        .engine
        .create_deposit_address_from(
            link.merchant,
            chosen.code.as_str(),
            None,
            Some(link.foreign_id.clone()),
            origin(Version::V2),
            // Paid in the currency it converts to: nothing to convert.
            link.convert_to.as_deref().filter(|to| *to != chosen.code.as_str()),
        )
        .await
    {
        Ok(a) => a,
        Err(EngineError::Invalid { message, .. }) => return refused_page(Refused::bad(format!("cannot be paid in {}: {message}", chosen.code))),
        Err(e) => {
            tracing::warn!(error = %e, "terminal: no deposit address");
            return refused_page(Refused(StatusCode::SERVICE_UNAVAILABLE, "has no address to pay to right now; try again".into()));
        }
    };
    let deposits = match state.engine.address_deposits(link.merchant, &address, 20).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "terminal: cannot read deposits");
            Vec::new()
        }
    };
    let amount = link.amount.as_deref().filter(|_| chosen.code == link.currency.code);
    let uri = kassa_engine::invoices::payment_uri(&chosen, &address.address, amount);
    // The newest deposit says where the payer is (the address serves the foreign_id for good).
    let (status_text, class, done) = match deposits.iter().find(|d| d.status != "dropped" && d.status != "reversed") {
        Some(d) if d.status == "credited" => (format!("Payment of {} {} received. Thank you!", d.amount, d.currency), "paid", true),
        Some(d) => (format!("Payment of {} {} detected: waiting for confirmations.", d.amount, d.currency), "pending", false),
        None => ("Waiting for your payment.".to_string(), "waiting", false),
    };
    let here = |c: &Currency| {
        format!("?data={}&signature={}&currency={}", urlencode(q.data.as_deref().unwrap_or("")), urlencode(q.signature.as_deref().unwrap_or("")), c.code)
    };
    let mut body = format!("<main class=\"card{}\" id=\"terminal\" data-status=\"{class}\">", if link.is_iframe { " embedded" } else { "" });
    body.push_str(&format!("<h1>Pay with {}</h1>", esc(chosen.name.as_str())));
    if offered.len() > 1 {
        body.push_str("<nav class=\"currencies\" aria-label=\"Pay with\">");
        for c in &offered {
            let selected = c.code == chosen.code;
            body.push_str(&format!(
                "<a id=\"cur-{code}\" href=\"{href}\"{sel}>{code}</a>",
                code = esc(c.code.as_str()),
                href = esc(&here(c)),
                sel = if selected { " class=\"selected\" aria-current=\"true\"" } else { "" }
            ));
        }
        body.push_str("</nav>");
    }
    if let Some(a) = amount {
        body.push_str(&format!("<p>Send</p><p class=\"amount\"><span id=\"amount\">{}</span> {}</p>", esc(a), esc(chosen.code.as_str())));
    } else {
        body.push_str(&format!("<p>Send any amount of {}</p>", esc(chosen.code.as_str())));
    }
    if let Some(to) = &link.convert_to {
        body.push_str(&format!("<p class=\"note\">Credited to the shop in {}.</p>", esc(to)));
    }
    body.push_str(&format!(
        "<p>to this address</p><p class=\"address\"><code id=\"address\">{address}</code></p><div id=\"qr\" data-uri=\"{uri}\">{svg}</div>\
         <p><a id=\"wallet\" href=\"{uri}\">Open in a wallet</a></p>",
        address = esc(&address.address),
        uri = esc(&uri),
        svg = qr_svg(&uri),
    ));
    body.push_str(&format!("<p id=\"status\" class=\"status {class}\" role=\"status\">{}</p>", esc(&status_text)));
    if let Some(back) = &link.url_back {
        body.push_str(&format!("<p><a id=\"back\" href=\"{}\" target=\"_top\">Back to the shop</a></p>", esc(back)));
    }
    body.push_str("</main>");
    html_page(StatusCode::OK, &format!("Pay with {}", chosen.name), &body, &frame_ancestors, !done)
}

/// A query value, percent-encoded.
fn urlencode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

const CSS: &str = "\
*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f3f4f6;color:#111}\
.card{max-width:28rem;margin:1rem auto;background:#fff;border-radius:12px;padding:1.25rem;box-shadow:0 1px 4px rgba(0,0,0,.1);text-align:center}\
.card.embedded{margin:0;box-shadow:none;border-radius:0}h1{font-size:1.2rem;margin:.2rem 0 .8rem}\
.currencies{display:flex;gap:.5rem;justify-content:center;flex-wrap:wrap;margin-bottom:1rem}\
.currencies a{padding:.4rem .9rem;border:1px solid #d1d5db;border-radius:999px;text-decoration:none;color:#111}\
.currencies a.selected{background:#111;color:#fff;border-color:#111}\
.amount{font-size:1.3rem;font-weight:600}.address code{word-break:break-all;font-size:.95rem;background:#f3f4f6;padding:.2rem .4rem;border-radius:6px}\
#qr svg{width:100%;max-width:240px;height:auto}.note{color:#555}\
.status{font-weight:600;padding:.6rem;border-radius:8px;background:#eef2ff}.status.paid{background:#dcfce7}.status.pending{background:#fef9c3}";
