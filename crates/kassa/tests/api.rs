//! Kassa's own API and the server skeleton over real HTTP, on both backends:
//! health/ready/metrics, request ids, authentication (revocation, scopes, IP
//! allowlists), tenant isolation (A3), malformed requests, and the OpenAPI document.

use kassa_engine::merchants::{parse_ip_allowlist, Scope};
use kassa_testkit::{both_backends, Backend, TestApp};
use serde_json::json;

async fn health_ready_metrics_and_request_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/health", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get("/ready", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ready", "database": backend.as_str()}));

    // A request id is generated, or the caller's is echoed.
    let resp = app.client.get(app.url("/health")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let resp = app.client.get(app.url("/health")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");

    let (_, token) = app.merchant_with_token("m", &[Scope::Read]).await;
    app.get("/kassa/v1/balances", Some(&token)).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("kassa_http_requests_total{")
            && l.contains("path=\"/kassa/v1/balances\"")
            && l.contains("status=\"200\"")),
        "metrics lack the request counter:\n{text}"
    );
    app.t.assert_books_balance().await;
}
both_backends!(skeleton, health_ready_metrics_and_request_ids);

async fn balances_and_history_of_the_authenticated_merchant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, token_a) = app.merchant_with_token("alice", &[Scope::Read]).await;
    let (b, token_b) = app.merchant_with_token("bob", &[Scope::Read]).await;
    app.t.fund(a, "EUR", "100").await;
    app.t.fund(a, "EUR", "-0.5").await;
    app.t.fund(b, "LTC", "2.5").await;

    let (status, body) = app.get("/kassa/v1/balances", Some(&token_a)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["balances"],
        json!([
            {"currency": "BTC", "balance": "0.00000000", "available": "0.00000000", "pending_out": "0.00000000", "pending_in": "0.00000000"},
            {"currency": "EUR", "balance": "99.50", "available": "99.50", "pending_out": "0.00", "pending_in": "0.00"},
            {"currency": "LTC", "balance": "0.00000000", "available": "0.00000000", "pending_out": "0.00000000", "pending_in": "0.00000000"},
            {"currency": "USD", "balance": "0.00", "available": "0.00", "pending_out": "0.00", "pending_in": "0.00"},
        ])
    );
    // A3: bob sees only bob's money and history.
    let (_, body) = app.get("/kassa/v1/balances", Some(&token_b)).await;
    let eur = body["balances"].as_array().unwrap().iter().find(|b| b["currency"] == "EUR").unwrap().clone();
    assert_eq!(eur["balance"], "0.00");
    let (_, hist_b) = app.get("/kassa/v1/history", Some(&token_b)).await;
    let entries_b = hist_b["entries"].as_array().unwrap();
    assert_eq!(entries_b.len(), 1);
    assert_eq!(entries_b[0]["amount"], "2.50000000");

    let (status, hist) = app.get("/kassa/v1/history", Some(&token_a)).await;
    assert_eq!(status, 200);
    let entries = hist["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{hist}");
    assert_eq!(entries[0]["amount"], "-0.50", "newest first");
    assert_eq!(entries[0]["counterparty"], "system:owner_equity:EUR");
    assert_eq!(entries[0]["memo"], json!({"type": "adjustment", "operator": "test", "reason": "test funding"}));
    assert_eq!(entries[1]["amount"], "100.00");
    assert_eq!(entries[0]["kind"], "transfer");
    assert!(entries[0]["created_at"].as_str().unwrap().ends_with('Z'));

    // Paging and the currency filter.
    let (_, page1) = app.get("/kassa/v1/history?limit=1", Some(&token_a)).await;
    assert_eq!(page1["entries"].as_array().unwrap().len(), 1);
    let next = page1["next_before"].as_i64().unwrap();
    let (_, page2) = app.get(&format!("/kassa/v1/history?limit=1&before={next}"), Some(&token_a)).await;
    assert_eq!(page2["entries"][0]["amount"], "100.00");
    let (_, ltc_only) = app.get("/kassa/v1/history?currency=LTC", Some(&token_a)).await;
    assert_eq!(ltc_only["entries"], json!([]));
    assert_eq!(ltc_only["next_before"], json!(null));

    // Public currency list with exact fee and limit strings.
    let (status, cur) = app.get("/kassa/v1/currencies", None).await;
    assert_eq!(status, 200);
    let ltc = cur["currencies"].as_array().unwrap().iter().find(|c| c["code"] == "LTC").unwrap().clone();
    assert_eq!(ltc["fees"]["withdrawal"], json!({"fixed": "0.00010000", "percent": "0.500000"}));
    assert_eq!(ltc["min_withdrawal"], "0.00100000");
    assert_eq!(ltc["chain"], "litecoin");
    let eur = cur["currencies"].as_array().unwrap().iter().find(|c| c["code"] == "EUR").unwrap().clone();
    assert_eq!((eur["kind"].as_str(), eur["chain"].is_null(), eur["can_send"].as_bool()), (Some("fiat"), true, Some(false)));
    app.t.assert_books_balance().await;
}
both_backends!(native_reads, balances_and_history_of_the_authenticated_merchant);

async fn authentication_is_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, token) = app.merchant_with_token("m", &[Scope::Read]).await;

    for bad in [None, Some(""), Some("ksk_nope_nope"), Some("garbage with spaces")] {
        let (status, body) = app.get("/kassa/v1/balances", bad).await;
        assert_eq!(status, 401, "{bad:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // A token that differs in its last character is unknown.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.get("/kassa/v1/balances", Some(&tampered)).await.0, 401);

    // Revocation takes effect on the very next request.
    assert_eq!(app.get("/kassa/v1/balances", Some(&token)).await.0, 200);
    let public = token.rsplit_once('_').unwrap().0.to_string();
    app.t.engine.revoke_key(&public).await.unwrap();
    let (status, body) = app.get("/kassa/v1/balances", Some(&token)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "the API key has been revoked");

    // A key without the read scope is forbidden.
    let key = app.t.engine.create_key(m, "native", vec![Scope::Receive], vec![], "").await.unwrap();
    let (status, body) = app.get("/kassa/v1/history", key.token.as_deref()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(body["error"]["message"], "the API key lacks the read scope");

    // IP allowlists: this client is 127.0.0.1.
    let elsewhere = parse_ip_allowlist("10.1.2.0/24").unwrap();
    let key = app.t.engine.create_key(m, "native", vec![Scope::Read], elsewhere, "").await.unwrap();
    assert_eq!(app.get("/kassa/v1/balances", key.token.as_deref()).await.0, 403);
    let here = parse_ip_allowlist("127.0.0.0/8").unwrap();
    let key = app.t.engine.create_key(m, "native", vec![Scope::Read], here, "").await.unwrap();
    assert_eq!(app.get("/kassa/v1/balances", key.token.as_deref()).await.0, 200);

    // A key of another dialect is not a native key.
    let w3 = app.t.engine.create_key(m, "wallets3", vec![Scope::Read], vec![], "").await.unwrap();
    let w3_token = w3.token.unwrap();
    assert_eq!(w3_token.len(), 64);
    assert!(w3_token.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(app.get("/kassa/v1/balances", Some(&w3_token)).await.0, 401);
}
both_backends!(auth, authentication_is_enforced);

async fn malformed_requests_get_clear_errors(backend: Backend) {
    let app = TestApp::spawn_with(backend, kassa_api::HttpOptions { max_body_bytes: 64 * 1024, ..Default::default() }).await;
    let (_, token) = app.merchant_with_token("m", &[Scope::Read]).await;
    let before = app.t.engine.check().await.unwrap().transactions;
    for (path, needle) in [
        ("/kassa/v1/history?limit=abc", "limit must be an integer from 1 to 500"),
        ("/kassa/v1/history?limit=0", "limit must be"),
        ("/kassa/v1/history?limit=100000", "limit must be"),
        ("/kassa/v1/history?before=-4", "before must be a positive id"),
        ("/kassa/v1/history?colour=red", "unknown query parameter \"colour\""),
        ("/kassa/v1/history?currency=DOGE", "unknown currency \"DOGE\""),
    ] {
        let (status, body) = app.get(path, Some(&token)).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
    }
    let (status, body) = app.get("/kassa/v1/nowhere", Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // A body over the limit is refused before it is read. (Its own client: the server
    // closes that connection, which must not be reused for the requests after it.)
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let resp = once
        .post(app.url("/kassa/v1/balances"))
        .bearer_auth(&token)
        .body(vec![b'x'; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");

    // Nothing was stored, and the server still serves.
    assert_eq!(app.t.engine.check().await.unwrap().transactions, before);
    assert_eq!(app.get("/kassa/v1/balances", Some(&token)).await.0, 200);
    app.t.assert_books_balance().await;
}
both_backends!(malformed, malformed_requests_get_clear_errors);

/// The served OpenAPI document is the one generated from the native router's routes
/// (the router and the document are built from one list, so every route it serves is
/// documented); every documented operation answers, no undocumented method answers on
/// a documented path, every reference resolves, and the Error schema lists every code
/// the API sends.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    // Every path and method is probed without credentials: no per-IP guard here.
    let rate_limits = kassa_api::limits::RateLimitOptions { auth_failures: None, ..Default::default() };
    let app = TestApp::spawn_with(Backend::Sqlite, kassa_api::HttpOptions { rate_limits, ..Default::default() }).await;
    let (status, doc) = app.get("/kassa/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc, serde_json::to_value(kassa_api::dialects::native::document()).unwrap(), "the served document is the generated one");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Kassa API");
    assert_eq!(doc["servers"], json!([{"url": "/kassa/v1"}]));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes.keys().collect::<Vec<_>>(), ["bearer", "operator"]);

    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 27, "{} paths documented", paths.len());
    for (path, item) in paths {
        let url = app.url(&format!("/kassa/v1{}", path.replace("{id}", "1")));
        for method in ["get", "post", "put", "patch", "delete"] {
            let status = app.client.request(method.to_uppercase().parse().unwrap(), &url).send().await.unwrap().status().as_u16();
            match item.get(method) {
                Some(op) => {
                    assert!(status != 404 && status != 405, "{method} {path} is documented but not served ({status})");
                    assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path} has no summary");
                    if ["/currencies", "/openapi.json"].contains(&path.as_str()) {
                        assert!(op.get("security").is_none(), "{method} {path} is public");
                    } else {
                        let scheme = if path.starts_with("/operator/") { "operator" } else { "bearer" };
                        assert_eq!(op["security"], json!([{ scheme: [] }]), "{method} {path}");
                        assert_eq!(op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error", "{method} {path}");
                    }
                }
                None => assert_eq!(status, 405, "{method} {path} is served but not documented"),
            }
        }
    }
    // Every reference names a schema of the document.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| match (k.as_str(), v) {
                ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                _ => refs(v, out),
            }),
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r} is not a schema reference"));
        assert!(schemas.contains_key(name), "{r} is referenced but not defined");
    }

    // The Error schema lists exactly the codes the API sends.
    let codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut sorted_codes = codes.clone();
    sorted_codes.sort();
    assert_eq!(
        sorted_codes,
        [
            "body_too_large", "conflict", "currency_unavailable", "forbidden", "idempotency_conflict", "inactive_currency", "insufficient_funds",
            "internal", "invalid_request", "limit_reached", "node_unavailable", "not_found", "quote_expired", "quote_mismatch", "rates_unavailable",
            "timeout", "too_many_requests", "unauthorized", "unknown_currency",
        ]
    );
    assert_eq!(schemas["Error"]["required"], json!(["error"]));
    assert_eq!(schemas["Error"]["properties"]["error"]["required"], json!(["code", "message"]));

    // What a user reads first, exactly.
    let amount = |description: &str| json!({"$ref": "#/components/schemas/Amount", "description": description});
    assert_eq!(schemas["Amount"], json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "examples": ["0.10000000"]}));
    assert_eq!(
        schemas["Balance"],
        json!({
            "type": "object",
            "description": "A balance as merchants see it, formatted at the currency's precision.",
            "required": ["currency", "balance", "available", "pending_out", "pending_in"],
            "properties": {
                "currency": {"type": "string"},
                "balance": amount("Total: everything posted."),
                "available": amount("What can be spent: balance less pending outgoing holds."),
                "pending_out": amount("Reserved by pending holds (e.g. withdrawals in flight)."),
                "pending_in": amount("Incoming value held pending."),
            }
        })
    );
    let time = json!({"type": "string", "format": "date-time"});
    let text_or_null = json!({"type": ["string", "null"]});
    let int = json!({"type": "integer", "format": "int64"});
    assert_eq!(
        schemas["Withdrawal"],
        json!({
            "type": "object",
            "description": "A withdrawal as merchants see it.",
            "required": ["id", "currency", "address", "amount", "fee", "priority", "idempotency_key", "status", "txid", "confirmations", "failure", "created_at", "updated_at"],
            "properties": {
                "id": int,
                "currency": {"type": "string"},
                "address": {"type": "string"},
                "amount": {"$ref": "#/components/schemas/Amount"},
                "fee": amount("Charged on top of the amount."),
                "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                "idempotency_key": {"type": "string"},
                "status": {"type": "string", "enum": ["requested", "pending", "queued", "signed", "broadcast", "confirmed", "failed", "cancelled"]},
                "txid": text_or_null,
                "confirmations": int,
                "failure": text_or_null,
                "description": {"type": ["string", "null"], "description": "The description given with the request (withdrawals made through a dialect\nthat takes one)."},
                "approval_reason": {"type": ["string", "null"], "description": "Why it waits (or waited) for an operator's approval: over which limit."},
                "source_currency": {"type": ["string", "null"], "description": "A withdrawal with exchange (`pay_from`): the currency of the balance that paid it."},
                "source_amount": amount("A withdrawal with exchange: what that balance gave, the exchange fee included."),
                "created_at": time,
                "updated_at": time,
            }
        })
    );
    // A list answers with its page, and the page with where to go on.
    assert_eq!(
        paths["/withdrawals"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/WithdrawalPage"})
    );
    assert_eq!(schemas["WithdrawalPage"]["required"], json!(["withdrawals", "next_before"]));
    let limit = paths["/withdrawals"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap().clone();
    assert_eq!((limit["schema"]["minimum"].as_i64(), limit["schema"]["maximum"].as_i64(), limit["schema"]["default"].as_i64()), (Some(1), Some(500), Some(100)));
}

async fn bodies_are_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.merchant_with_token("m", &[Scope::Read, Scope::Receive, Scope::Withdraw]).await;
    let (_, reader) = app.merchant_with_token("r", &[Scope::Read]).await;
    let post = |path: &'static str, body: String, token: String| {
        let app = &app;
        async move {
            let resp = app.client.post(app.url(path)).bearer_auth(token).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    for (path, body, status, needle) in [
        ("/kassa/v1/addresses", "{not json", 400, "not valid JSON"),
        ("/kassa/v1/addresses", "[1]", 400, "must be a JSON object"),
        ("/kassa/v1/addresses", r#"{"currency":"LTC","colour":"red"}"#, 400, "unknown field \"colour\""),
        ("/kassa/v1/addresses", r#"{"label":"x"}"#, 400, "currency is required"),
        ("/kassa/v1/addresses", r#"{"currency":7}"#, 400, "currency must be a string"),
        ("/kassa/v1/addresses", r#"{"currency":"XYZ"}"#, 400, "unknown currency"),
        ("/kassa/v1/addresses", r#"{"currency":"EUR"}"#, 400, "not carried by a chain"),
        ("/kassa/v1/addresses", r#"{"currency":"LTC"}"#, 503, "chain litecoin is not configured"),
        ("/kassa/v1/withdrawals", r#"{"currency":"LTC","address":"x","amount":"1","priority":"asap","idempotency_key":"k"}"#, 400, "priority must be"),
        ("/kassa/v1/withdrawals", r#"{"currency":"LTC","address":"x","amount":true,"idempotency_key":"k"}"#, 400, "amount must be"),
        ("/kassa/v1/withdrawals", r#"{"currency":"LTC","address":"x","amount":"1"}"#, 400, "idempotency_key is required"),
        ("/kassa/v1/withdrawals", r#"{"currency":"LTC","address":"x","amount":"1","idempotency_key":"k"}"#, 503, "chain litecoin is not configured"),
    ] {
        let (got, body) = post(path, body.to_string(), token.clone()).await;
        assert_eq!(got, status, "{path} {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{path}: {body}");
    }
    let (status, _) = post("/kassa/v1/addresses", r#"{"currency":"LTC"}"#.into(), reader.clone()).await;
    assert_eq!(status, 403, "receive scope needed");
    let (status, _) = post("/kassa/v1/withdrawals", r#"{"currency":"LTC","address":"x","amount":"1","idempotency_key":"k"}"#.into(), reader).await;
    assert_eq!(status, 403, "withdraw scope needed");
    assert_eq!(app.get("/kassa/v1/withdrawals/abc", Some(&token)).await.0, 404);
    assert_eq!(app.get("/kassa/v1/withdrawals/999", Some(&token)).await.0, 404);
    app.t.assert_books_balance().await;
}
both_backends!(bodies, bodies_are_validated);

// The operator API blocks and unblocks merchants: only with the configured operator
// token (never a merchant's key), refusals change nothing, and a blocked merchant's
// keys are refused at once until it is unblocked.
async fn operators_block_and_unblock_merchants(backend: Backend) {
    const OPERATOR: &str = "operator-token-for-tests-0123456789abcdef";
    let off = TestApp::spawn(backend).await;
    let (status, e) = off.get("/kassa/v1/operator/merchants", Some(OPERATOR)).await;
    assert_eq!((status, e["error"]["code"].as_str()), (401, Some("unauthorized")), "off without an operator_token");
    assert!(e["error"]["message"].as_str().unwrap().contains("set operator_token"), "{e}");

    let app = TestApp::spawn_with(backend, kassa_api::HttpOptions { operator_token: Some(OPERATOR.into()), ..Default::default() }).await;
    let (m, token) = app.merchant_with_token("shop", &[Scope::Read]).await;
    let (_, other) = app.merchant_with_token("other", &[Scope::Read, Scope::Manage]).await;
    let block = |id: i64, auth: &str, body: serde_json::Value| {
        let (app, auth) = (&app, auth.to_string());
        async move { app.post(&format!("/kassa/v1/operator/merchants/{id}/block"), &auth, body).await }
    };
    for auth in ["", "wrong-token-of-some-length-0123456789", &token, &other] {
        let (status, e) = block(m.0, auth, json!({"reason": "x"})).await;
        assert_eq!((status, e["error"]["code"].as_str()), (401, Some("unauthorized")), "{auth:?}: a merchant's key is no operator token");
    }
    for (body, needle) in [(json!({}), "reason is required"), (json!({"reason": "  "}), "a block needs a reason"), (json!({"reason": "x", "until": 1}), "unknown field")] {
        let (status, e) = block(m.0, OPERATOR, body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{body}: {e}");
    }
    assert_eq!(block(999_999, OPERATOR, json!({"reason": "x"})).await.0, 404);
    assert_eq!(app.get("/kassa/v1/balances", Some(&token)).await.0, 200, "refused blocks changed nothing");

    let (status, b) = block(m.0, OPERATOR, json!({"reason": "chargeback review", "operator": "ops@example"})).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!((b["status"].as_str(), b["blocked_reason"].as_str(), b["name"].as_str()), (Some("blocked"), Some("chargeback review"), Some("shop")));
    let (status, e) = app.get("/kassa/v1/balances", Some(&token)).await;
    assert_eq!((status, e["error"]["code"].as_str()), (403, Some("forbidden")), "blocked at once: {e}");
    assert_eq!(app.get("/kassa/v1/balances", Some(&other)).await.0, 200, "the other merchant is untouched");
    assert_eq!(block(m.0, OPERATOR, json!({"reason": "again"})).await.0, 409);
    let (_, list) = app.get("/kassa/v1/operator/merchants", Some(OPERATOR)).await;
    let shop = list["merchants"].as_array().unwrap().iter().find(|x| x["id"] == json!(m.0)).unwrap().clone();
    assert_eq!((shop["status"].as_str(), shop["blocked_reason"].as_str()), (Some("blocked"), Some("chargeback review")));

    let (status, u) = app.post(&format!("/kassa/v1/operator/merchants/{}/unblock", m.0), OPERATOR, json!({})).await;
    assert_eq!((status, u["status"].as_str(), &u["blocked_reason"]), (200, Some("active"), &serde_json::Value::Null));
    assert_eq!(app.get("/kassa/v1/balances", Some(&token)).await.0, 200, "served again");
    assert_eq!(app.post(&format!("/kassa/v1/operator/merchants/{}/unblock", m.0), OPERATOR, json!({})).await.0, 409);
}
both_backends!(operator, operators_block_and_unblock_merchants);

// Mount prefixes are configuration: a dialect moved off the root answers only where it
// is mounted, and refusals there keep its shape.
async fn dialects_mount_where_configured(backend: Backend) {
    let mounts = [("westwallet".to_string(), vec!["/ww".to_string()]), ("native".to_string(), vec!["/api/kassa".to_string()])].into();
    let app = TestApp::spawn_with(backend, kassa_api::HttpOptions { mounts, ..Default::default() }).await;
    let (_, token) = app.merchant_with_token("m", &[Scope::Read]).await;
    let (status, body) = app.get("/api/kassa/balances", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/kassa/v1/balances", Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "not at the default prefix any more");
    let (status, body) = app.get("/ww/wallet/balances", None).await;
    assert_eq!((status, body), (401, json!({"error": "wrong_credentials"})), "WestWallet's own refusal where it is mounted");
    let (status, body) = app.get("/ww/wallet/nowhere", None).await;
    assert_eq!((status, body), (404, json!({"error": "not_found"})), "its 404 shape under its mount");
    let (status, body) = app.get("/wallet/balances", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "off the root: {body}");
    let (status, body) = app.get("/westwallet/wallet/balances", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "nor at its default prefix: {body}");
}
both_backends!(mounts, dialects_mount_where_configured);
