//! Node hooks: `-walletnotify` / `-blocknotify` (through curl) tell Kassa that something
//! changed on a chain. A hook only wakes that chain's watcher; nothing depends on hooks
//! arriving (the watcher also polls).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/hooks/chain/{name}", post(chain_hook))
}

#[derive(Deserialize)]
struct HookQuery {
    token: Option<String>,
}

async fn chain_hook(State(state): State<AppState>, Path(name): Path<String>, Query(q): Query<HookQuery>) -> impl IntoResponse {
    let authorized = match (&state.hook_token, &q.token) {
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    };
    if !authorized {
        let body = json!({"error": {"code": "unauthorized", "message": "hooks need ?token= matching the configured hook_token"}});
        let mut r = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
        r.extensions_mut().insert(crate::limits::AuthFailed);
        return r;
    }
    if state.engine.chains.wake(&name) {
        (StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": format!("no chain named {name:?}")}}))).into_response()
    }
}
