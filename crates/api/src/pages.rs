//! The hosted payment page of an invoice, `/pay/{token}`: server-rendered HTML with a
//! little vanilla JavaScript and no external resources. Without JavaScript it shows the
//! amount, address, QR code and currency choice (links); with it, copy buttons, a
//! countdown, and live status (polling `/pay/{token}/status`): a payment flips it to
//! paid and sends the customer to the merchant's success URL, a partial payment shows
//! the remainder, an expired invoice says so.

use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use kassa_engine::invoices::{Invoice, InvoiceOption};
use kassa_engine::EngineError;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/pay/{token}", get(page)).route("/pay/{token}/status", get(status)).route("/pay/{token}/pick", post(pick))
}

#[derive(Deserialize)]
struct PickForm {
    currency: String,
}

/// The payer picks a currency (a form, so it works without JavaScript): for an invoice
/// that fixes its rates then, they are fixed now; then the page in that currency.
async fn pick(State(state): State<AppState>, Path(token): Path<String>, Form(f): Form<PickForm>) -> Response {
    match load(&state, &token).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(r) => return r,
    }
    match state.engine.pick_invoice_currency(&token, f.currency.trim()).await {
        Ok(inv) => {
            let currency: String = f.currency.trim().chars().filter(char::is_ascii_alphanumeric).collect();
            Redirect::to(&format!("/pay/{}?currency={currency}", inv.token)).into_response()
        }
        Err(EngineError::NotFound(_)) => not_found(),
        Err(EngineError::Invalid { message, .. }) => (StatusCode::BAD_REQUEST, [(CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot fix an invoice's rates for the payer's pick");
            (StatusCode::SERVICE_UNAVAILABLE, "cannot fix the rate now (no fresh rate); try again").into_response()
        }
    }
}

#[derive(Deserialize)]
struct PageQuery {
    currency: Option<String>,
}

/// Text safe inside HTML elements and quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn settled(status: &str) -> bool {
    matches!(status, "paid" | "overpaid" | "paid_late")
}

/// What changes the page: status, and per currency what is left and pending.
fn fingerprint(inv: &Invoice) -> String {
    let mut f = inv.status.clone();
    for o in &inv.options {
        f.push_str(&format!("|{}:{}:{}", o.currency, o.remaining, o.pending));
    }
    f
}

fn not_found() -> Response {
    let body = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Invoice not found</title></head>\
                <body><p>This payment link is not valid.</p></body></html>";
    (StatusCode::NOT_FOUND, [(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn load(state: &AppState, token: &str) -> Result<Option<Invoice>, Response> {
    if token.len() > 64 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    match state.engine.invoice_by_token(token).await {
        Ok(inv) => Ok(Some(inv)),
        Err(EngineError::NotFound(_)) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "cannot load an invoice for its payment page");
            Err((StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable; try again").into_response())
        }
    }
}

async fn status(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let inv = match load(&state, &token).await {
        Ok(Some(inv)) => inv,
        Ok(None) => return (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response(),
        Err(r) => return r,
    };
    let now_ms = state.engine.now_ms();
    let body = json!({
        "status": inv.status,
        "settled": settled(&inv.status),
        "fingerprint": fingerprint(&inv),
        "expires_at_ms": inv.expires_at_ms,
        "now_ms": now_ms,
        "success_url": inv.success_url,
        "options": inv.options.iter().map(|o| json!({"currency": o.currency, "amount": o.amount, "remaining": o.remaining,
            "pending": o.pending, "paid": o.paid})).collect::<Vec<_>>(),
    });
    ([(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

pub(crate) fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .build()
            // The XML declaration is not wanted inside HTML.
            .split_once("?>")
            .map(|(_, svg)| svg.trim().to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn is_zero(amount: &str) -> bool {
    amount.chars().all(|c| c == '0' || c == '.')
}

async fn page(State(state): State<AppState>, Path(token): Path<String>, Query(q): Query<PageQuery>) -> Response {
    let inv = match load(&state, &token).await {
        Ok(Some(inv)) => inv,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let chosen: Option<&InvoiceOption> = q
        .currency
        .as_deref()
        .and_then(|c| inv.options.iter().find(|o| o.currency == c))
        .or_else(|| inv.options.first());
    let now_ms = state.engine.now_ms();
    let on_its_way = inv.status == "new" && inv.options.iter().any(|o| !is_zero(&o.pending));
    let expired = !settled(&inv.status) && (inv.status == "expired" || (now_ms > inv.expires_at_ms && !on_its_way));
    let open = !settled(&inv.status) && !expired;
    let nonce = kassa_engine::secrets::random_alphanumeric(24);
    // The merchant's title, else its description, heads the page.
    let title = [&inv.title, &inv.description].into_iter().find(|t| !t.is_empty()).cloned().unwrap_or_else(|| "Payment".to_string());
    // The payer's pick of a currency fixes the rates: until then, a choice.
    let must_pick = inv.rate_on_pick && inv.rate_fixed_at_ms.is_none() && inv.status == "new";
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(&format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} – {} {}</title><style nonce=\"{nonce}\">{CSS}</style></head><body>",
        esc(&title),
        esc(&inv.amount),
        esc(&inv.currency)
    ));
    html.push_str(&format!(
        "<main id=\"invoice\" class=\"card\" data-status=\"{}\" data-open=\"{open}\" data-fingerprint=\"{}\" data-expires=\"{}\" data-success=\"{}\" data-currency=\"{}\">",
        esc(&inv.status),
        esc(&fingerprint(&inv)),
        inv.expires_at_ms,
        esc(inv.success_url.as_deref().unwrap_or("")),
        esc(chosen.map(|o| o.currency.as_str()).unwrap_or(""))
    ));
    html.push_str(&format!("<h1>{}</h1>", esc(&title)));
    if !inv.title.is_empty() && !inv.description.is_empty() {
        html.push_str(&format!("<p id=\"description\" class=\"description\">{}</p>", esc(&inv.description)));
    }
    html.push_str(&format!("<p class=\"total\">{} {}</p>", esc(&inv.amount), esc(&inv.currency)));
    if must_pick && open {
        html.push_str(&format!(
            "<form id=\"pick\" method=\"post\" action=\"/pay/{}/pick\"><p>Choose what to pay with: the rate is fixed when you choose, for {} minutes.</p>",
            esc(&inv.token),
            state.engine.invoices.rate_window.as_secs() / 60
        ));
        for o in &inv.options {
            html.push_str(&format!(
                "<p><button type=\"submit\" name=\"currency\" value=\"{c}\" id=\"pick-{c}\">{c}</button> <span class=\"estimate\">about {amount} {c}</span></p>",
                c = esc(&o.currency),
                amount = esc(&o.amount)
            ));
        }
        html.push_str("</form>");
    }
    if inv.options.len() > 1 && !must_pick {
        html.push_str("<nav class=\"currencies\" aria-label=\"Pay with\">");
        for o in &inv.options {
            let selected = chosen.is_some_and(|c| c.currency == o.currency);
            html.push_str(&format!(
                "<a id=\"cur-{c}\" href=\"?currency={c}\"{}>{c}</a>",
                if selected { " class=\"selected\" aria-current=\"true\"" } else { "" },
                c = esc(&o.currency)
            ));
        }
        html.push_str("</nav>");
    }
    let (status_text, status_class) = match inv.status.as_str() {
        s if settled(s) => ("Paid. Thank you!".to_string(), "paid"),
        "partially_paid" if expired => ("This invoice has expired after a partial payment; contact the merchant.".to_string(), "expired"),
        _ if expired => ("This invoice has expired. Do not send a payment to it.".to_string(), "expired"),
        "partially_paid" => match chosen {
            Some(o) => (format!("Partially paid: {} {} still to pay.", o.remaining, o.currency), "partial"),
            None => ("Partially paid.".to_string(), "partial"),
        },
        _ if chosen.is_some_and(|o| !is_zero(&o.pending)) => ("Payment detected: waiting for confirmations.".to_string(), "pending"),
        _ => ("Awaiting payment.".to_string(), "waiting"),
    };
    if let (true, false, Some(o)) = (open, must_pick, chosen) {
        html.push_str(&format!(
            "<section id=\"pay\"><p>Send exactly</p>\
             <p class=\"amount\"><span id=\"amount\">{amount}</span> {c} <button type=\"button\" class=\"copy\" data-copy=\"{amount}\">Copy amount</button></p>\
             <p>to this {c} address</p>\
             <p class=\"address\"><code id=\"address\">{address}</code> <button type=\"button\" class=\"copy\" data-copy=\"{address}\">Copy address</button></p>\
             <div id=\"qr\" data-uri=\"{uri}\">{svg}</div>\
             <p><a id=\"wallet\" href=\"{uri}\">Open in a wallet</a></p></section>",
            amount = esc(&o.remaining),
            c = esc(&o.currency),
            address = esc(&o.address),
            uri = esc(&o.payment_uri),
            svg = qr_svg(&o.payment_uri),
        ));
    }
    html.push_str(&format!("<p id=\"status\" class=\"status {status_class}\" role=\"status\">{}</p>", esc(&status_text)));
    if settled(&inv.status) {
        if let Some(url) = &inv.success_url {
            html.push_str(&format!("<p><a id=\"continue\" href=\"{}\">Back to the shop</a></p>", esc(url)));
        }
    } else if expired {
        if let Some(url) = &inv.failure_url {
            html.push_str(&format!("<p><a id=\"failed\" href=\"{}\">Back to the shop</a></p>", esc(url)));
        }
    } else if open && !must_pick {
        html.push_str(&format!("<p id=\"countdown\">Pay before {} UTC.</p>", esc(&inv.expires_at.replace('T', " ").replace(".000Z", ""))));
    }
    html.push_str("<noscript><p>Reload this page to see the payment's status.</p></noscript></main>");
    html.push_str(&format!("<script nonce=\"{nonce}\">{SCRIPT}</script></body></html>"));
    let csp = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    ([(CONTENT_TYPE, "text/html; charset=utf-8".to_string()), (CACHE_CONTROL, "no-store".to_string()), (CONTENT_SECURITY_POLICY, csp)], html)
        .into_response()
}

const CSS: &str = "\
*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f3f4f6;color:#111}\
.card{max-width:28rem;margin:1rem auto;background:#fff;border-radius:12px;padding:1.25rem;box-shadow:0 1px 4px rgba(0,0,0,.1);text-align:center}\
h1{font-size:1.2rem;margin:.2rem 0}.total{font-size:1.6rem;font-weight:600;margin:.3rem 0 1rem}\
.currencies{display:flex;gap:.5rem;justify-content:center;flex-wrap:wrap;margin-bottom:1rem}\
.currencies a{padding:.4rem .9rem;border:1px solid #d1d5db;border-radius:999px;text-decoration:none;color:#111}\
.currencies a.selected{background:#111;color:#fff;border-color:#111}\
.amount{font-size:1.3rem;font-weight:600}.address code{word-break:break-all;font-size:.95rem;background:#f3f4f6;padding:.2rem .4rem;border-radius:6px}\
#qr svg{width:100%;max-width:240px;height:auto}.description{color:#444;margin:.2rem 0 .6rem}.estimate{color:#555}\
button{font:inherit;font-size:.8rem;padding:.25rem .6rem;border-radius:6px;border:1px solid #d1d5db;background:#fff;cursor:pointer}\
.status{font-weight:600;padding:.6rem;border-radius:8px;background:#eef2ff}.status.paid{background:#dcfce7}.status.expired{background:#fee2e2}\
.status.partial,.status.pending{background:#fef9c3}#countdown{color:#555}";

const SCRIPT: &str = r#"(function(){
var main=document.getElementById('invoice');
var fp=main.dataset.fingerprint, expires=Number(main.dataset.expires), success=main.dataset.success, offset=0;
document.querySelectorAll('button.copy').forEach(function(b){b.addEventListener('click',function(){
  if(navigator.clipboard){navigator.clipboard.writeText(b.dataset.copy).then(function(){b.textContent='Copied';});}
});});
var cd=document.getElementById('countdown');
function tick(){ if(!cd) return; var left=Math.max(0,Math.floor((expires-(Date.now()+offset))/1000));
  var m=Math.floor(left/60), s=left%60; cd.textContent=left>0?('Time left: '+m+':'+(s<10?'0':'')+s):'Expired'; }
function poll(){
  fetch(location.pathname.replace(/\/$/,'')+'/status',{cache:'no-store'}).then(function(r){return r.json();}).then(function(s){
    offset=s.now_ms-Date.now();
    if(s.settled&&s.success_url){location.href=s.success_url;return;}
    if(s.fingerprint!==fp){location.reload();return;}
    if(main.dataset.open==='true'&&!s.settled&&s.now_ms>s.expires_at_ms){location.reload();}
  }).catch(function(){});
}
tick(); setInterval(tick,1000);
if(main.dataset.open==='true'||main.dataset.success){ setInterval(poll,2000); }
})();"#;
